"""Opentime's own exceptions.

Exception tree::

    OpentimeError
    ├── ConfigError           a setting is missing or malformed (CLI exit code 2)
    ├── CampaignError         a campaign folder or blocks.toml is invalid
    └── HTTPError             carries an HTTP status and a JSON message (API-style endpoints)
        ├── BadRequest        400
        ├── Unauthorized      401  no valid API key; sends ``WWW-Authenticate: Bearer``
        ├── Forbidden         403  the API key lacks the endpoint's scope
        ├── NotFound          404
        ├── MethodNotAllowed  405
        ├── PayloadTooLarge   413
        ├── UnsupportedMediaType 415
        └── Unprocessable     422  well-formed but unusable (e.g. a campaign template fails)

``HTTPError.headers`` are extra response headers the handler must send.

Token failures live in ``app.security.tokens`` (``TokenError`` and subclasses), key ring failures
in ``app.security.keyring`` (``KeyRingError``), API key failures in ``app.security.apikeys``
(``ApiKeyError``) and store failures in ``app.store.base`` (``StoreError``): each is translated
once, at the edge that serves the request.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar


class OpentimeError(Exception):
    """Base class for errors raised by Opentime itself."""


class ConfigError(OpentimeError):
    """A setting is missing or malformed; the message names the setting and its source."""


class CampaignError(OpentimeError):
    """A campaign definition is invalid; the message names the file and the block."""


class HTTPError(OpentimeError):
    status_code = 500
    headers: ClassVar[Mapping[str, str] | None] = None

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class BadRequest(HTTPError):
    status_code = 400


class Unauthorized(HTTPError):
    status_code = 401
    headers = {"WWW-Authenticate": "Bearer"}


class Forbidden(HTTPError):
    status_code = 403


class NotFound(HTTPError):
    status_code = 404


class MethodNotAllowed(HTTPError):
    status_code = 405


class PayloadTooLarge(HTTPError):
    status_code = 413


class UnsupportedMediaType(HTTPError):
    status_code = 415


class Unprocessable(HTTPError):
    status_code = 422
