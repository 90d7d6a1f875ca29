"""API-key checks for endpoints under ``/api/``: ``key = await require_scope(request, "render")``.

The key comes from ``Authorization: Bearer otk_...`` or, failing that, ``X-API-Key: otk_...``
(an ``Authorization`` header with another scheme is left to whoever it is meant for). Failures
raise ``Unauthorized`` (401, ``WWW-Authenticate: Bearer``) or ``Forbidden`` (403), which the app's
``HTTPError`` handler renders as ``{"error": ...}``. Each failure writes one audit line
(``app.security.audit``) saying why, with the key id when the key was well formed.

Every request with a valid key counts against its rate limit (``app.limits``): the ``preview`` scope's
pages against ``rate_limit_preview``, every other endpoint against ``rate_limit_api``; over it,
``RateLimited`` (429 with ``Retry-After``).

Pages a person opens in a browser (the preview) pass ``basic=True``: the key is then also accepted
as the password of HTTP Basic auth (any user name), and a 401 raises ``BasicAuthRequired``, whose
``WWW-Authenticate: Basic`` challenge makes the browser ask for it. API endpoints do not accept
Basic, so a script's misconfigured credentials never trigger a browser-style prompt.
"""

from __future__ import annotations

import base64
import binascii
from typing import Protocol

from starlette.datastructures import Headers
from starlette.requests import Request

from app.errors import Forbidden, Unauthorized
from app.limits.limiter import RateLimiter
from app.security.apikeys import (
    SCOPES,
    ApiKey,
    ApiKeyCache,
    ApiKeyError,
    BadSecret,
    MalformedKey,
    MissingKey,
    RevokedKey,
    UnknownKey,
    authenticate,
    parse_key,
)
from app.security.audit import auth_failed
from app.store.base import Store

BASIC_REALM = "Opentime preview"

# What the client is told. Unknown id and wrong secret read the same, so the answer does not help
# anyone probe which key ids exist.
_MESSAGES: dict[type[ApiKeyError], str] = {
    MissingKey: "missing API key: send 'Authorization: Bearer otk_...' or 'X-API-Key: otk_...'",
    MalformedKey: "malformed API key",
    UnknownKey: "invalid API key",
    BadSecret: "invalid API key",
    RevokedKey: "API key revoked",
}
# What the audit log is told: everything (app.security.audit).
_REASONS: dict[type[ApiKeyError], str] = {
    MissingKey: "missing-key",
    MalformedKey: "malformed-key",
    UnknownKey: "unknown-key",
    BadSecret: "bad-secret",
    RevokedKey: "revoked-key",
}


class BasicAuthRequired(Unauthorized):
    """401 for browser pages: asks for the API key as the Basic auth password."""

    headers = {"WWW-Authenticate": f'Basic realm="{BASIC_REALM}"'}


class ApiServices(Protocol):
    """The part of ``request.state.services`` that API-key checks use."""

    @property
    def store(self) -> Store: ...

    @property
    def api_key_cache(self) -> ApiKeyCache: ...

    @property
    def limits(self) -> RateLimiter: ...


async def require_scope(request: Request, scope: str, *, basic: bool = False) -> ApiKey:
    """Return the request's API key if it is valid and grants ``scope``; raise 401/403 otherwise.

    With ``basic``, the key may also come as the HTTP Basic password, and 401s challenge for Basic.
    """
    if scope not in SCOPES:
        raise ValueError(f"unknown scope {scope!r}; declare it in app.security.apikeys.SCOPES")
    services: ApiServices = request.state.services
    presented = ""
    try:
        presented = presented_key(request.headers, basic=basic)
        key = await authenticate(services.store.api_keys, presented, cache=services.api_key_cache)
    except ApiKeyError as exc:
        auth_failed(request.scope, _REASONS[type(exc)], key_id=_key_id(presented, exc))
        error = BasicAuthRequired if basic else Unauthorized
        raise error(_MESSAGES[type(exc)]) from None
    # Counted once authenticated: an unknown key cannot spend a real key's budget.
    await services.limits.admit("preview" if scope == "preview" else "api", key.key_id)
    if not key.allows(scope):
        auth_failed(request.scope, "missing-scope", key_id=key.key_id, scope=scope)
        raise Forbidden(f"API key {key.key_id} lacks the {scope!r} scope")
    return key


def _key_id(presented: str, exc: ApiKeyError) -> str | None:
    """The id part of a well-formed presented key, for the audit line (the secret never leaves)."""
    if isinstance(exc, MissingKey | MalformedKey):
        return None
    return parse_key(presented)[0]


def presented_key(headers: Headers, *, basic: bool = False) -> str:
    """The key the client sent, or "" when it sent none; with ``basic``, also the Basic password."""
    scheme, _, credentials = headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer":
        return credentials.strip()
    if basic and scheme.lower() == "basic":
        return basic_password(credentials.strip())
    return headers.get("x-api-key", "").strip()


def basic_password(credentials: str) -> str:
    """The password of ``base64(user:password)``; raises MalformedKey when that does not decode."""
    try:
        decoded = base64.b64decode(credentials, validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        raise MalformedKey("undecodable Basic credentials") from None
    return decoded.partition(":")[2]
