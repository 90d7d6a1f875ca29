"""How every open-time answer goes out: one header rule for every kind.

An ``Answer`` carries the kind's body, status and headers (content type and cache policy); the
pipeline adds what is the same for all: the AMP CORS headers where the route has them,
``Content-Length``, ``X-Opentime-Fallback`` with the reason when the answer is not personal,
``X-Opentime-Data-Age`` with the age of the data used, an ETag and a ``304`` when the client
already has the bytes, and no body for ``HEAD``. Errors for URLs that are not open-time URLs at all
are JSON with the same headers as amp-list answers.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, cast

import orjson

from app.asgi import Headers, Scope, Send, send_bytes
from app.content.cache_policy import OPEN_TIME_PRIVATE, not_modified

FALLBACK_HEADER = b"x-opentime-fallback"
DATA_AGE_HEADER = b"x-opentime-data-age"
NOSNIFF = (b"x-content-type-options", b"nosniff")
# The URL holds a token: keep it out of Referer headers.
NO_REFERRER = (b"referrer-policy", b"no-referrer")
JSON_HEADERS: Headers = ((b"content-type", b"application/json"), OPEN_TIME_PRIVATE, NOSNIFF)
HTML_HEADERS: Headers = (
    (b"content-type", b"text/html; charset=utf-8"),
    OPEN_TIME_PRIVATE,
    NOSNIFF,
    NO_REFERRER,
)


@dataclass(slots=True)
class Answer:
    """What a kind answers; slotted for the same reason as ``app.open_time.kind.Open``."""

    body: bytes
    reason: str | None  # why this is not the recipient's content (None: it is); the metrics' outcome
    headers: Headers  # the kind's: content type and cache policy
    age: float | None = None  # seconds since the data used last changed
    status: int = 200
    etag: bytes | None = None


def json_answer(status: int, data: Mapping[str, Any], reason: str | None = None) -> Answer:
    return Answer(orjson.dumps(data), reason, JSON_HEADERS, status=status)


async def send_answer(send: Send, scope: Scope, answer: Answer, extra: Headers = ()) -> None:
    headers = [*answer.headers, *extra]
    if answer.reason is not None:
        headers.append((FALLBACK_HEADER, answer.reason.encode()))
    if answer.age is not None:
        headers.append((DATA_AGE_HEADER, b"%d" % answer.age))
    if answer.etag is not None:
        headers.append((b"etag", answer.etag))
        if not_modified(_header(scope, b"if-none-match"), answer.etag):
            await send_bytes(send, 304, headers, b"")
            return
    body = answer.body
    headers.append((b"content-length", b"%d" % len(body)))
    await send_bytes(send, answer.status, headers, b"" if scope["method"] == "HEAD" else body)


async def send_error(send: Send, status: int, message: str, extra: Headers = (), method: str = "GET") -> None:
    """A JSON error for a request that is not an open-time request at all (404, 405); no body for HEAD."""
    body = orjson.dumps({"error": message})
    headers = [*JSON_HEADERS, (b"content-length", b"%d" % len(body)), *extra]
    await send_bytes(send, status, headers, b"" if method == "HEAD" else body)


def _header(scope: Scope, name: bytes) -> bytes | None:
    for key, value in scope["headers"]:
        if key == name:
            return cast(bytes, value)
    return None
