"""The ``opentime`` command line: one module per command group over the same core the server uses."""
