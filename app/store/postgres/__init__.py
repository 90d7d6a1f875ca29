"""The PostgreSQL backend: the only package that imports asyncpg; every SQL statement it runs."""
