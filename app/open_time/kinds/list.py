"""``/v1/{token}/list/{block}.json``: the open-time hot path, as a plain ASGI callable.

Built for tens of thousands of requests a second on one core: no Request/Response objects, the
path split once, pre-encoded headers, and a cache hit answered without awaiting anything. Every
outcome is a 200 with JSON (the block's data or a static fallback, marked by the
``X-Opentime-Fallback`` header; ``X-Opentime-Data-Age`` gives the age in seconds of the profile data
a personalized answer used) or a 4xx JSON error for a URL that is not an open-time URL at
all: never a redirect and never a 500, since a mail client shows a broken block for either.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import orjson

from app.asgi import Headers, Receive, Scope, Send, send_bytes
from app.campaigns.loader import ListBlock
from app.content.cache_policy import OPEN_TIME_PRIVATE
from app.security.amp_cors import CORS_HEADERS
from app.security.tokens import TokenError, TokenExpired

if TYPE_CHECKING:
    from app.services import Services

logger = logging.getLogger(__name__)

GENERIC_FALLBACK = b'{"items":[]}'
JSON_HEADERS = (
    (b"content-type", b"application/json"),
    OPEN_TIME_PRIVATE,
    (b"x-content-type-options", b"nosniff"),
)
FALLBACK_HEADER = b"x-opentime-fallback"
DATA_AGE_HEADER = b"x-opentime-data-age"


async def list_app(scope: Scope, receive: Receive, send: Send) -> None:
    """``/v1/{token}/list/{block}.json``; the AMP CORS middleware has already run and left the CORS
    headers for every response of this app in ``scope[CORS_HEADERS]``."""
    method = scope["method"]
    cors: Headers = scope.get(CORS_HEADERS, ())
    parts = scope["path"].split("/")
    if len(parts) != 5 or not parts[4].endswith(".json"):
        await send_error(send, 404, "not an open-time URL: expected /v1/{token}/list/{block}.json", cors)
        return
    if method != "GET" and method != "HEAD":
        await send_error(send, 405, f"method {method} not allowed: use GET", cors)
        return
    services: Services = scope["state"]["services"]
    try:
        body, reason, age = await list_body(services, parts[2], parts[4][:-5])
    except Exception:
        # Last line of defence: the email must still get well-formed JSON.
        logger.exception("open-time list request failed")
        body, reason, age = GENERIC_FALLBACK, "internal-error", None
    services.open_stats.served(reason, age)
    await send_json(send, body, reason, head=method == "HEAD", age=age, extra=cors)


async def list_body(
    services: Services, token: str, block_name: str
) -> tuple[bytes, str | None, float | None]:
    """The body, the fallback reason (None when personalized) and the age of the data used."""
    now = services.clock()
    try:
        claims = services.verifier.verify(token, now=int(now))
    except TokenExpired as exc:
        return _campaign_fallback(services, exc.claims.campaign, block_name), exc.reason, None
    except TokenError as exc:
        return GENERIC_FALLBACK, exc.reason, None
    block = find_block(services, claims.campaign, block_name)
    if block is None:
        return GENERIC_FALLBACK, "unknown-block", None
    if claims.recipient is None:
        return block.fallback_body, "no-recipient", None
    outcome = services.lists.cached(claims.campaign, block, claims.recipient)
    if outcome is None:
        outcome = await services.lists.load(claims.campaign, block, claims.recipient)
        now = services.clock()
    updated_at = outcome.updated_at
    return outcome.body, outcome.fallback_reason, None if updated_at is None else max(now - updated_at, 0.0)


def find_block(services: Services, campaign_name: str, block_name: str) -> ListBlock | None:
    campaign = services.campaigns.get(campaign_name)
    return None if campaign is None else campaign.lists.get(block_name)


def _campaign_fallback(services: Services, campaign_name: str, block_name: str) -> bytes:
    block = find_block(services, campaign_name, block_name)
    return GENERIC_FALLBACK if block is None else block.fallback_body


async def send_json(
    send: Send,
    body: bytes,
    reason: str | None,
    *,
    head: bool = False,
    age: float | None = None,
    extra: Headers = (),
) -> None:
    headers = [*JSON_HEADERS, (b"content-length", b"%d" % len(body)), *extra]
    if reason is not None:
        headers.append((FALLBACK_HEADER, reason.encode()))
    if age is not None:
        headers.append((DATA_AGE_HEADER, b"%d" % age))
    await send_bytes(send, 200, headers, b"" if head else body)


async def not_found(scope: Scope, receive: Receive, send: Send) -> None:
    await send_error(
        send, 404, "not an open-time URL: expected /v1/{token}/{list|html|img|form}/{block} or /view"
    )


async def send_error(send: Send, status: int, message: str, extra: Headers = ()) -> None:
    await send_json_object(send, status, {"error": message}, extra)


async def send_json_object(
    send: Send, status: int, data: Mapping[str, Any], extra: Sequence[tuple[bytes, bytes]] = ()
) -> None:
    """A JSON object with the open-time JSON headers (errors here, form replies in kinds.form)."""
    body = orjson.dumps(data)
    headers = [*JSON_HEADERS, (b"content-length", str(len(body)).encode()), *extra]
    await send_bytes(send, status, headers, body)
