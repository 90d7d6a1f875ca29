"""The open-time request path (``/v1/{token}/{kind}/...``) and its kinds."""
