"""Dynamic images: ``/v1/{token}/img/{block}[@2x].{png|jpg|gif}`` for ``image`` blocks.

The ``img`` route serves countdown blocks too (``app.open_time.kinds.countdown``, looked up first).
Never a broken image: every outcome is a 200 with an image (the recipient's render, their last good
render, the block's pre-rendered fallback, or a 1x1 pixel when no block is known); mail proxies are
reported to cache error statuses for a long time. Per-recipient renders may be kept briefly by our
CDN only (``app.content.cache_policy``); campaign-wide ones are shared; fallbacks are kept seconds.
"""

from __future__ import annotations

import re
from typing import cast

from app.campaigns.loader import Campaign
from app.content.cache_policy import CachePolicy, Header, etag_for
from app.content.images import ImageRequest, Served, hash_of
from app.countdown.blocks import CountdownBlock
from app.decisions.decide import Decision
from app.images import render
from app.images.layout import CONTENT_TYPES, ImageBlock, ImageFormat
from app.open_time.clicking import remember_shown
from app.open_time.deciding import decide
from app.open_time.fetch_class import FetchClass
from app.open_time.kind import DegradingKind, Open, Target
from app.open_time.reasons import Reason
from app.open_time.respond import NO_REFERRER, NOSNIFF, Answer
from app.security.tokens import Claims

IMAGE_NAME = re.compile(r"([a-z0-9][a-z0-9_-]{0,39})(@2x)?\.(png|jpg|gif)")


class ImageKind(DegradingKind):
    name = "image"
    needs_recipient = False  # a campaign-wide token renders the block with an empty profile

    def find(self, campaign: Campaign, block: str) -> ImageBlock | None:
        return campaign.images.get(block)

    def fallback(self, request: Open, block: ImageBlock | CountdownBlock | None, reason: Reason) -> Answer:
        return fallback_image(request, block, reason)

    async def render(self, request: Open, block: ImageBlock) -> Answer:
        services, claims, target = request.services, request.claims, request.target
        assert claims is not None
        if block.decider is not None:
            decided = decide(request, block)
            block = (decided if isinstance(decided, Decision) else await decided).block
        if block.link is not None:  # its click leads to this (variant's) link
            remember_shown(request, block, (block.link,))
        fmt = image_format(target)
        fetch_class = fetch_class_of(request, claims)
        image = ImageRequest(claims.campaign, block, claims.recipient, fmt, target.scale, fetch_class)
        served = await services.images.serve(image)
        return image_answer(served, fmt, _headers(services.cache_policy, claims, block, served))


def _headers(policy: CachePolicy, claims: Claims, block: ImageBlock, served: Served) -> list[Header]:
    if served.fallback_reason is not None:
        return policy.fallback_image()
    if claims.recipient is None:
        if "~" in block.name or block.decider is not None:  # decided per open: no shared CDN copy
            return policy.fallback_image()
        return policy.shared_image(claims.campaign, block.cache_ttl_s or 60)
    return policy.image(claims.recipient, claims.campaign)


def fallback_image(request: Open, block: ImageBlock | CountdownBlock | None, reason: Reason) -> Answer:
    """The block's designed fallback image, or a 1x1 pixel when no block is known."""
    services, target = request.services, request.target
    fmt = image_format(target)
    if block is None:
        served = Served(render.blank(fmt), "blank", reason)
    else:
        served = services.images.fallback(block, fmt, target.scale, reason)
    return image_answer(served, fmt, services.cache_policy.fallback_image())


def image_answer(served: Served, fmt: ImageFormat, cache_headers: list[Header]) -> Answer:
    etag = etag_for(served.key if served.key != "blank" else hash_of(served.body))
    headers = [(b"content-type", CONTENT_TYPES[fmt]), *cache_headers, NOSNIFF, NO_REFERRER]
    return Answer(served.body, served.fallback_reason, headers, etag=etag)


def fetch_class_of(request: Open, claims: Claims) -> FetchClass:
    """Who is fetching (a mail proxy, Apple's prefetch, a direct open), counted for /metrics."""
    user_agent = client = None
    for key, value in request.scope["headers"]:
        if key == b"user-agent":
            user_agent = value.decode("latin-1")
    peer = request.scope.get("client")
    if peer is not None:
        client = cast(str, peer[0])
    return request.services.images.classify(user_agent, client, claims.issued_at)


def image_format(target: Target) -> ImageFormat:
    return cast(ImageFormat, target.fmt)


def parse(parts: list[str]) -> Target | None:
    match = IMAGE_NAME.fullmatch(parts[4]) if len(parts) == 5 else None
    if match is None:
        return None
    return Target(parts[2], match[1], match[3], 2 if match[2] else 1)
