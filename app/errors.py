"""Opentime's own exceptions: one root, ``OpentimeError``, that every exception in ``app/`` derives from
(``tests/test_errors.py`` checks it). Errors that callers also catch as ``ValueError`` keep that base.

Exception tree (defined here unless a module is named)::

    OpentimeError
    ├── ConfigError             a setting is missing or malformed (CLI exit code 2)
    ├── CampaignError           a campaign folder or blocks.toml is invalid
    ├── HTTPError               carries an HTTP status and a JSON message (API-style endpoints)
    │   ├── BadRequest          400
    │   ├── Unauthorized        401  no valid API key; sends ``WWW-Authenticate: Bearer``
    │   │   └── BasicAuthRequired     app.security.api_auth: the preview page's browser login
    │   ├── Forbidden           403  the API key lacks the endpoint's scope
    │   ├── NotFound            404
    │   ├── RequestTimeout      408  the body did not arrive within the read deadline (closes)
    │   ├── PayloadTooLarge     413
    │   ├── UnsupportedMediaType 415
    │   └── Unprocessable       422  well-formed but unusable (e.g. a campaign template fails)
    ├── TokenError              app.security.tokens; ``reason`` is the machine code
    │   └── TokenMalformed, TokenUnknownKey, TokenBadSignature, TokenNotYetValid, TokenExpired
    ├── KeyRingError            app.security.keyring: unreadable or invalid key ring
    ├── SealError               app.security.crypto: a sealed recipient id does not open
    ├── ApiKeyError             app.security.apikeys
    │   └── MissingKey, MalformedKey, UnknownKey, BadSecret, RevokedKey
    ├── SignatureError          app.security.webhook_auth: a webhook signature is refused
    │   └── MissingSignature, MalformedSignature, StaleTimestamp, BadSignature, ReplayedSignature
    ├── StoreError              app.store.base: the store is unusable or an operation failed
    ├── UpstreamError           app.upstream.client (the tree is in its docstring)
    ├── AmpValidatorError       app.campaigns.validator
    │   └── ValidatorUnavailable, ValidatorFailed
    ├── InvalidSubmission       app.campaigns.forms: submitted form values do not match the block
    ├── ProfileConflict         app.campaigns.forms: a profile path runs through a non-object
    ├── TemplateError           app.render.templates
    ├── FormatError (+ValueError)  app.render.formats: a display format or time zone is unusable
    ├── EmailLimitError         app.render.email: a part is over its size limit
    ├── AddressError (+ValueError)  app.render.addresses: a From or To address is unusable
    ├── RenderError             app.images.render: a layout names an unusable file
    ├── CountdownError (+ValueError)  app.countdown.clock
    │   └── DeadlineError, StyleError
    ├── RowError (+ValueError)  app.ingest.import_rows: one import row is invalid
    │   └── HeaderError
    ├── ImportFileError (+ValueError)  app.ingest.import_rows: the file cannot be imported
    └── EventTypesError (+ValueError)  app.ingest.event_types: custom event types are malformed

``HTTPError.headers`` are extra response headers the handler must send. Each error is translated
once, at the edge that serves the request or runs the command. Not yet under the root (their
modules are being reworked): ``BatchError`` and ``Invalid`` in ``app.ingest.events``, ``Rejected``
in ``app.open_time.kinds.form``, ``Refused`` in ``app.routes.webhooks``.
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


class RequestTimeout(HTTPError):
    status_code = 408
    headers = {"Connection": "close"}


class PayloadTooLarge(HTTPError):
    status_code = 413


class UnsupportedMediaType(HTTPError):
    status_code = 415


class Unprocessable(HTTPError):
    status_code = 422
