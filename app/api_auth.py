"""API-key checks for endpoints under ``/api/``: ``key = await require_scope(request, "render")``.

The key comes from ``Authorization: Bearer otk_...`` or, failing that, ``X-API-Key: otk_...``
(an ``Authorization`` header with another scheme is left to whoever it is meant for). Failures
raise ``Unauthorized`` (401, ``WWW-Authenticate: Bearer``) or ``Forbidden`` (403), which the app's
``HTTPError`` handler renders as ``{"error": ...}``.
"""

from __future__ import annotations

import logging
from typing import Protocol

from starlette.datastructures import Headers
from starlette.requests import Request

from app.apikeys import (
    SCOPES,
    ApiKey,
    ApiKeyCache,
    ApiKeyError,
    BadSecret,
    KeyStore,
    MalformedKey,
    MissingKey,
    RevokedKey,
    UnknownKey,
    authenticate,
)
from app.errors import Forbidden, Unauthorized

logger = logging.getLogger(__name__)

# What the client is told. Unknown id and wrong secret read the same, so the answer does not help
# anyone probe which key ids exist.
_MESSAGES: dict[type[ApiKeyError], str] = {
    MissingKey: "missing API key: send 'Authorization: Bearer otk_...' or 'X-API-Key: otk_...'",
    MalformedKey: "malformed API key",
    UnknownKey: "invalid API key",
    BadSecret: "invalid API key",
    RevokedKey: "API key revoked",
}


class ApiServices(Protocol):
    """The part of ``request.state.services`` that API-key checks use."""

    @property
    def store(self) -> KeyStore: ...

    @property
    def api_key_cache(self) -> ApiKeyCache: ...


async def require_scope(request: Request, scope: str) -> ApiKey:
    """Return the request's API key if it is valid and grants ``scope``; raise 401/403 otherwise."""
    if scope not in SCOPES:
        raise ValueError(f"unknown scope {scope!r}; declare it in app.apikeys.SCOPES")
    services: ApiServices = request.state.services
    try:
        key = await authenticate(services.store, presented_key(request.headers), cache=services.api_key_cache)
    except ApiKeyError as exc:
        logger.info("API key rejected on %s: %s", request.url.path, exc)
        raise Unauthorized(_MESSAGES[type(exc)]) from None
    if not key.allows(scope):
        raise Forbidden(f"API key {key.key_id} lacks the {scope!r} scope")
    return key


def presented_key(headers: Headers) -> str:
    """The key the client sent, or "" when it sent none."""
    scheme, _, credentials = headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer":
        return credentials.strip()
    return headers.get("x-api-key", "").strip()
