"""Shared pieces of the Starlette JSON endpoints (/api, /webhooks): replies and size-capped bodies."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from app.content.cache_policy import NO_STORE_HEADERS
from app.errors import OpentimeError

NO_STORE = NO_STORE_HEADERS


def json_response(data: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(data), status, media_type="application/json", headers=NO_STORE)


class BodyTimeout(OpentimeError):
    """The client did not send the whole body within the read deadline."""


async def read_limited(request: Request, limit: int, within: float | None = None) -> bytes | None:
    """The whole body, or None as soon as it is known to exceed ``limit`` bytes (declared or sent).

    ``within``: seconds to receive it all, else ``BodyTimeout``. ``opentime serve`` puts the same
    deadline on every request in its HTTP protocol (``app.serving``); this one also holds when the app
    runs under another server.
    """
    if declared_too_large(request, limit):
        return None
    body = bytearray()
    try:
        async with asyncio.timeout(within):
            async for chunk in request.stream():
                body += chunk
                if len(body) > limit:
                    return None
    except TimeoutError:
        raise BodyTimeout from None
    return bytes(body)


def declared_too_large(request: Request, limit: int) -> bool:
    declared = request.headers.get("content-length", "")
    return declared.isdigit() and int(declared) > limit


def closing_json_response(data: Any, status: int) -> Response:
    """A JSON refusal sent before the request body was read: the connection is closed after it, so
    the server does not go on reading (and discarding) a body nobody wants."""
    return Response(
        orjson.dumps(data), status, media_type="application/json", headers={**NO_STORE, "connection": "close"}
    )
