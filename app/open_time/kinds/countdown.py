"""Countdown timers on the image route: ``/v1/{token}/img/{block}[@2x].{gif|png|jpg}``.

``.gif`` is the animated timer, ``.png``/``.jpg`` its first frame as a still, ``@2x`` twice the size.
Frame 0 shows the whole seconds left at the request, so a copy of a running timer may live one second
in our CDN and nowhere else; once the deadline has passed, a campaign-wide timer's ended image is the
same for every token, and the CDN may keep it a day. Its fallback is the block's pre-rendered one.

A campaign-wide timer (a fixed deadline) shows nothing personal, so an expired but authentic token
(still signed by a key in the ring) still gets it: the email's countdown runs to its end however long
after the send it is opened. A per-recipient timer with an expired token gets the fallback.
"""

from __future__ import annotations

from collections.abc import Awaitable

from app.campaigns.loader import Campaign
from app.content.cache_policy import CachePolicy, Header
from app.content.images import Timed
from app.countdown.blocks import CountdownBlock
from app.countdown.timers import EXPIRED_CDN_TTL_SECONDS, CountdownRequest
from app.images.layout import ImageFormat
from app.open_time.kind import DegradingKind, Open, Reply
from app.open_time.kinds.image import fallback_image, fetch_class_of, image_answer, image_format
from app.open_time.reasons import Reason
from app.open_time.respond import Answer
from app.security.tokens import Claims


class CountdownKind(DegradingKind):
    name = "countdown"
    needs_recipient = False  # campaign-wide timers need none; personal ones fall back without one

    def find(self, campaign: Campaign, block: str) -> CountdownBlock | None:
        return campaign.countdowns.get(block)

    def serves_expired(self, block: CountdownBlock) -> bool:
        return block.shared

    def fallback(self, request: Open, block: CountdownBlock | None, reason: Reason) -> Answer:
        return fallback_image(request, block, reason)

    def render(self, request: Open, block: CountdownBlock) -> Reply:
        services, claims, target = request.services, request.claims, request.target
        assert claims is not None
        fmt = image_format(target)
        fetch_class_of(request, claims)  # counted, though a timer looks the same for every fetcher
        # A campaign-wide timer reads no profile: the recipient, if the token names one, is not used.
        recipient = None if block.shared else claims.recipient
        timed = services.images.serve_countdown(
            CountdownRequest(claims.campaign, block, recipient, fmt, target.scale)
        )
        if isinstance(timed, Timed):  # this second is built already: answered without awaiting
            return _answer(services.cache_policy, claims, block, fmt, timed)
        return _answer_when(services.cache_policy, claims, block, fmt, timed)


async def _answer_when(
    policy: CachePolicy, claims: Claims, block: CountdownBlock, fmt: ImageFormat, timed: Awaitable[Timed]
) -> Answer:
    return _answer(policy, claims, block, fmt, await timed)


def _answer(
    policy: CachePolicy, claims: Claims, block: CountdownBlock, fmt: ImageFormat, timed: Timed
) -> Answer:
    return image_answer(timed.served, fmt, _headers(policy, claims, block, timed))


def _headers(policy: CachePolicy, claims: Claims, block: CountdownBlock, timed: Timed) -> list[Header]:
    if timed.served.fallback_reason is not None:
        return policy.fallback_image()
    if block.shared:
        if timed.left is None:
            return policy.shared_image(claims.campaign, EXPIRED_CDN_TTL_SECONDS)
        return policy.live_timer(claims.campaign, None)
    assert claims.recipient is not None  # personal timers need a recipient, else they fall back
    if timed.left is None:
        return policy.image(claims.recipient, claims.campaign)
    return policy.live_timer(claims.campaign, claims.recipient)
