"""The SQLite backend: every SQL statement the embedded store runs."""
