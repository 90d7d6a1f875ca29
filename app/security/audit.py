"""Audit lines: one on the ``opentime.audit`` logger for every authentication failure.

A rejected, unknown or revoked API key, a key without the scope a route needs, a webhook signature
that is missing, malformed, stale, matches no configured secret or is replayed, a wrong metrics
token: each writes one warning with the reason, the route template (``/api/customers/{customer}``,
never the path, which may hold a customer id), the client address (as uvicorn's proxy headers
settled it) and, for API keys, the key id (the public part of ``otk_<key_id>_<secret>``; never the
secret). Not throttled: each attempt is one line, so a probe shows its full size.
"""

from __future__ import annotations

import logging

from app.asgi import Scope

AUDIT_LOGGER = "opentime.audit"
_audit = logging.getLogger(AUDIT_LOGGER)


def auth_failed(request: Scope, reason: str, /, **fields: str | None) -> None:
    """Log one authentication failure of ``request`` (its ASGI scope) for ``reason`` (a stable code)."""
    route = route_template(request)
    client = client_address(request)
    extra = {"audit": "auth-failed", "reason": reason, "route": route, "client": client, **fields}
    _audit.warning("authentication failed on %s from %s: %s", route, client, reason, extra=extra)


def route_template(scope: Scope) -> str:
    return str(getattr(scope.get("route"), "path", "?"))


def client_address(scope: Scope) -> str:
    client = scope.get("client")
    return str(client[0]) if client else "-"
