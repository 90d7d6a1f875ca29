"""The OpenAPI description of the system-facing endpoints (``/api/*``, ``/webhooks/*``)."""
