"""Logging: one configuration for the app's loggers and uvicorn's, request ids, and what a line holds.

``log_config(log_level, log_format)`` is the ``logging.config.dictConfig`` dict that ``app.serving`` hands to
uvicorn, which applies it in the supervisor and again in every worker process (a dict of plain
strings, so it travels to workers as it is). It sends the app's loggers (``app.*``), the audit and
other ``opentime.*`` loggers and uvicorn's to stderr at ``log_level``, in ``log_format``: ``text``
(a readable line) or ``json`` (one object a line: ``ts``, ``level``, ``logger``, ``message``,
``request_id`` and the record's structured extras). Other libraries log at warning and above only:
an HTTP client at info would write the upstream URL, which holds a recipient id.

Request ids: a request to the Starlette part of the app (``/api``, ``/webhooks``, preview, ops) gets
one from ``RequestIds``, the inbound ``X-Request-Id`` when it is sane (``_SANE``) or a new one, and it
is echoed on the response. An open-time request (``/v1/...``) costs nothing here until a line is
logged for it: the pipeline notes its scope (``enter``) only on its fallback path, the id is made
when the line is written, from the CDN's ``X-Request-Id`` if it sent a sane one, and the answer
carries it (``assigned``). With the access log on, every open is noted, so its access line has one.
Either way the id lives in a context variable, so every later line of that request, and of tasks it
starts, carries it.

No line holds personal data: messages, extras and tracebacks go through
``app.personal.redact_emails``, and ``RedactAccessPaths`` rewrites the access log's paths (tokens,
customer ids, query values).
"""

from __future__ import annotations

import logging
import re
import uuid
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

import orjson

from app.asgi import Receive, Scope, Send
from app.personal import redact_emails, redact_path

HEADER = b"x-request-id"
SCOPE_KEY = "opentime.request_id"
# An inbound id is kept only if it is short and plain: it is written into logs and echoed back.
_SANE = re.compile(rb"[A-Za-z0-9._:+/=-]{1,128}")
_REQUEST: ContextVar[Scope | None] = ContextVar("opentime_request", default=None)
# Attributes every LogRecord has: anything else on a record is an extra the caller gave.
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {
    "message",
    "asctime",
    "request_id",
    "color_message",  # uvicorn's coloured copy of the message
    "taskName",
}
ACCESS_LOGGER = "uvicorn.access"
APP_LOGGERS = ("app", "opentime")


# -- request ids ------------------------------------------------------------------------------------


def enter(scope: Scope) -> None:
    """Note ``scope`` as the current request; its id is made only when a line is logged for it."""
    _REQUEST.set(scope)


def request_id() -> str | None:
    """The current request's id (made now if it has none yet), or None outside a request."""
    scope = _REQUEST.get()
    if scope is None:
        return None
    rid: str | None = scope.get(SCOPE_KEY)
    if rid is None:
        rid = scope[SCOPE_KEY] = inbound_id(scope.get("headers", ())) or new_id()
    return rid


def assigned(scope: Scope) -> bytes | None:
    """The request's id if one was made (something logged), for its answer's ``X-Request-Id``."""
    rid: str | None = scope.get(SCOPE_KEY)
    return None if rid is None else rid.encode("ascii")


def inbound_id(headers: Any) -> str | None:
    """The client's (CDN's) ``X-Request-Id`` if it is sane, else None."""
    for name, value in headers:
        if name == HEADER:
            return value.decode("ascii") if _SANE.fullmatch(value) else None
    return None


def new_id() -> str:
    return uuid.uuid4().hex


class RequestIds:
    """Pure ASGI middleware: an id for every HTTP request, in the context and on the response."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid = scope[SCOPE_KEY] = inbound_id(scope["headers"]) or new_id()
        _REQUEST.set(scope)
        header = (HEADER, rid.encode("ascii"))

        async def send_with_id(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", ()), header]
            await send(message)

        await self.app(scope, receive, send_with_id)


# -- what a line holds ------------------------------------------------------------------------------


class RequestIdFilter(logging.Filter):
    """Puts the current request's id on every record (None outside a request)."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id()
        return True


class RedactAccessPaths(logging.Filter):
    """For ``uvicorn.access``: the path without tokens, customer ids or query values, and the
    request's parts as structured fields."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and len(args) == 5:
            client, method, path, version, status = args
            path = redact_path(str(path))
            record.args = (client, method, path, version, status)
            record.client, record.method, record.path, record.status = client, method, path, status
        return True


def extras(record: logging.LogRecord) -> dict[str, Any]:
    """The structured fields the caller gave (``extra=``), strings made free of email addresses."""
    return {
        name: redact_emails(value) if isinstance(value, str) else value
        for name, value in vars(record).items()
        if name not in _STANDARD
    }


def timestamp(record: logging.LogRecord) -> str:
    moment = datetime.fromtimestamp(record.created, UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


class JsonFormatter(logging.Formatter):
    """One JSON object a line."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": timestamp(record),
            "level": record.levelname,
            "logger": record.name,
            "message": redact_emails(record.getMessage()),
            "request_id": getattr(record, "request_id", None),
            **extras(record),
        }
        if record.exc_info:
            line["exc"] = redact_emails(self.formatException(record.exc_info))
        return orjson.dumps(line, default=str).decode()


class TextFormatter(logging.Formatter):
    """``<ts> <LEVEL> <logger> [<request id>] <message> key=value ...``, for a person at a terminal."""

    def format(self, record: logging.LogRecord) -> str:
        rid = getattr(record, "request_id", None)
        words = [timestamp(record), record.levelname, record.name]
        if rid is not None:
            words.append(f"[{rid}]")
        words.append(redact_emails(record.getMessage()))
        if record.name != ACCESS_LOGGER:  # its fields are the message itself
            words += [f"{name}={value}" for name, value in extras(record).items()]
        text = " ".join(words)
        if record.exc_info:
            text += "\n" + redact_emails(self.formatException(record.exc_info))
        return text


# -- configuration ----------------------------------------------------------------------------------

FORMATTERS = {"text": TextFormatter, "json": JsonFormatter}


def log_config(log_level: str, log_format: str) -> dict[str, Any]:
    """The ``dictConfig`` for the settings ``log_level`` and ``log_format``."""
    level = log_level.upper()
    formatter = FORMATTERS[log_format]

    def ours(**more: Any) -> dict[str, Any]:
        return {"handlers": ["stderr"], "level": level, "propagate": False, **more}

    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {
            "request_id": {"()": f"{__name__}.RequestIdFilter"},
            "access_paths": {"()": f"{__name__}.RedactAccessPaths"},
        },
        "formatters": {"main": {"()": f"{__name__}.{formatter.__name__}"}},
        "handlers": {
            "stderr": {
                "class": "logging.StreamHandler",
                "stream": "ext://sys.stderr",
                "formatter": "main",
                "filters": ["request_id"],
            }
        },
        "loggers": {
            **{name: ours() for name in APP_LOGGERS},
            "uvicorn": ours(),
            "uvicorn.error": {"level": level},  # propagates to "uvicorn"
            ACCESS_LOGGER: ours(filters=["access_paths"]),
        },
        "root": {"handlers": ["stderr"], "level": "WARNING"},
    }
