"""``/v1/{token}/img/{block}[@2x].{png|jpg|gif}``: dynamic images and countdowns, as a plain ASGI callable.

Countdown blocks answer on the same URLs: ``.gif`` is the animated timer, ``.png``/``.jpg`` its first
frame as a still, ``@2x`` twice the size. A campaign-wide timer (fixed deadline) is the same for every
token, so its headers let the CDN keep it until the current time bucket ends (the expired image a day);
a per-recipient timer gets the per-recipient image headers.

Never a broken image: every outcome for an image URL is a 200 with an image (the recipient's render,
their last good render, the block's pre-rendered fallback or a 1x1 pixel for unknown blocks), the
reason in ``X-Opentime-Fallback``; mail proxies are reported to cache error statuses for a long time.
Only a URL that is not an image URL at all, or a method other than GET/HEAD, gets a 4xx.
"""

from __future__ import annotations

import logging
import re
from typing import TYPE_CHECKING, cast

from app.asgi import Receive, Scope, Send, send_bytes
from app.content.cache_policy import CachePolicy, Header, etag_for, not_modified
from app.content.images import ImageContent, ImageRequest, Served, Timed, hash_of
from app.countdown.blocks import CountdownBlock
from app.countdown.timers import CountdownRequest
from app.images import render
from app.images.layout import CONTENT_TYPES, ImageBlock, ImageFormat
from app.open_time.kinds.list import FALLBACK_HEADER, send_error
from app.security.tokens import Claims, TokenError, TokenExpired

if TYPE_CHECKING:
    from app.services import Services

logger = logging.getLogger(__name__)

IMAGE_NAME = re.compile(r"([a-z0-9][a-z0-9_-]{0,39})(@2x)?\.(png|jpg|gif)")


async def image_app(scope: Scope, receive: Receive, send: Send) -> None:
    parts = scope["path"].split("/")
    match = IMAGE_NAME.fullmatch(parts[4]) if len(parts) == 5 else None
    if match is None:
        await send_error(send, 404, "not an image URL: expected /v1/{token}/img/{block}[@2x].{png|jpg|gif}")
        return
    if scope["method"] not in ("GET", "HEAD"):
        await send_error(send, 405, f"method {scope['method']} not allowed: use GET")
        return
    services: Services = scope["state"]["services"]
    content, policy = services.images, services.cache_policy
    fmt = cast(ImageFormat, match[3])
    scale = 2 if match[2] else 1
    try:
        served, headers = await _image(services, content, policy, scope, parts[2], match[1], fmt, scale)
    except Exception:
        logger.exception("image request failed")
        served, headers = Served(render.blank(fmt), "blank", "internal-error"), policy.fallback_image()
    await send_image(send, scope, served, fmt, headers)


async def _image(
    services: Services,
    content: ImageContent,
    policy: CachePolicy,
    scope: Scope,
    token: str,
    block_name: str,
    fmt: ImageFormat,
    scale: int,
) -> tuple[Served, list[Header]]:
    try:
        claims = services.verifier.verify(token, now=int(services.clock()))
    except TokenExpired as exc:
        return _fallback(services, content, exc.claims.campaign, block_name, fmt, scale, exc.reason), (
            policy.fallback_image()
        )
    except TokenError as exc:
        return Served(render.blank(fmt), "blank", exc.reason), policy.fallback_image()
    fetch_class = content.classify(_header(scope, b"user-agent"), _client(scope), claims.issued_at)
    timer = find_countdown(services, claims.campaign, block_name)
    if timer is not None:
        timed = await content.serve_countdown(
            CountdownRequest(claims.campaign, timer, claims.recipient, fmt, scale)
        )
        return timed.served, _timer_headers(policy, claims, timed)
    block = find_image(services, claims.campaign, block_name)
    if block is None:
        return Served(render.blank(fmt), "blank", "unknown-block"), policy.fallback_image()
    request = ImageRequest(claims.campaign, block, claims.recipient, fmt, scale, fetch_class)
    served = await content.serve(request)
    return served, _headers(policy, claims, block, served)


def _headers(policy: CachePolicy, claims: Claims, block: ImageBlock, served: Served) -> list[Header]:
    if served.fallback_reason is not None:
        return policy.fallback_image()
    if claims.recipient is None:
        return policy.shared_image(claims.campaign, block.cache_ttl_s or 60)
    return policy.image(claims.recipient, claims.campaign)


def _timer_headers(policy: CachePolicy, claims: Claims, timed: Timed) -> list[Header]:
    """Campaign-wide timers: the CDN keeps each bucket's render until the bucket ends."""
    if timed.served.fallback_reason is not None:
        return policy.fallback_image()
    if timed.shared_ttl is not None:
        return policy.shared_image(claims.campaign, timed.shared_ttl)
    assert claims.recipient is not None  # personal timers need a recipient, else they fall back
    return policy.image(claims.recipient, claims.campaign)


def _fallback(
    services: Services,
    content: ImageContent,
    campaign: str,
    block_name: str,
    fmt: ImageFormat,
    scale: int,
    reason: str,
) -> Served:
    block = find_countdown(services, campaign, block_name) or find_image(services, campaign, block_name)
    if block is None:
        return Served(render.blank(fmt), "blank", reason)
    return content.fallback(block, fmt, scale, reason)


def find_image(services: Services, campaign_name: str, block_name: str) -> ImageBlock | None:
    campaign = services.campaigns.get(campaign_name)
    return None if campaign is None else campaign.images.get(block_name)


def find_countdown(services: Services, campaign_name: str, block_name: str) -> CountdownBlock | None:
    campaign = services.campaigns.get(campaign_name)
    return None if campaign is None else campaign.countdowns.get(block_name)


async def send_image(
    send: Send, scope: Scope, served: Served, fmt: ImageFormat, cache_headers: list[Header]
) -> None:
    etag = etag_for(served.key if served.key != "blank" else hash_of(served.body))
    headers = [
        (b"content-type", CONTENT_TYPES[fmt]),
        *cache_headers,
        (b"etag", etag),
        (b"x-content-type-options", b"nosniff"),
        (b"referrer-policy", b"no-referrer"),
    ]
    if served.fallback_reason is not None:
        headers.append((FALLBACK_HEADER, served.fallback_reason.encode()))
    if not_modified(_header_bytes(scope, b"if-none-match"), etag):
        await send_bytes(send, 304, headers, b"")
        return
    headers.append((b"content-length", str(len(served.body)).encode()))
    await send_bytes(send, 200, headers, b"" if scope["method"] == "HEAD" else served.body)


def _header_bytes(scope: Scope, name: bytes) -> bytes | None:
    for key, value in scope["headers"]:
        if key == name:
            return cast(bytes, value)
    return None


def _header(scope: Scope, name: bytes) -> str | None:
    value = _header_bytes(scope, name)
    return None if value is None else value.decode("latin-1")


def _client(scope: Scope) -> str | None:
    client = scope.get("client")
    return None if client is None else cast(str, client[0])
