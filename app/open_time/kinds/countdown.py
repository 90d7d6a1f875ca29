"""Countdown timers on the image route: ``/v1/{token}/img/{block}[@2x].{gif|png|jpg}``.

``.gif`` is the animated timer, ``.png``/``.jpg`` its first frame as a still, ``@2x`` twice the size.
A campaign-wide timer (a fixed deadline) is the same for every token, so its headers let the CDN keep
it until the current time bucket ends (the expired image a day); a per-recipient timer (a deadline
from the profile) gets the per-recipient image headers. Its fallback is the block's pre-rendered one.
"""

from __future__ import annotations

from app.campaigns.loader import Campaign
from app.content.cache_policy import CachePolicy, Header
from app.content.images import Timed
from app.countdown.blocks import CountdownBlock
from app.countdown.timers import CountdownRequest
from app.open_time.kind import DegradingKind, Open
from app.open_time.kinds.image import fallback_image, fetch_class_of, image_answer, image_format
from app.open_time.reasons import Reason
from app.open_time.respond import Answer
from app.security.tokens import Claims


class CountdownKind(DegradingKind):
    name = "countdown"
    needs_recipient = False  # campaign-wide timers need none; personal ones fall back without one

    def find(self, campaign: Campaign, block: str) -> CountdownBlock | None:
        return campaign.countdowns.get(block)

    def fallback(self, request: Open, block: CountdownBlock | None, reason: Reason) -> Answer:
        return fallback_image(request, block, reason)

    async def render(self, request: Open, block: CountdownBlock) -> Answer:
        services, claims, target = request.services, request.claims, request.target
        assert claims is not None
        fmt = image_format(target)
        fetch_class_of(request, claims)  # counted, though a timer looks the same for every fetcher
        timer = CountdownRequest(claims.campaign, block, claims.recipient, fmt, target.scale)
        timed = await services.images.serve_countdown(timer)
        return image_answer(timed.served, fmt, _headers(services.cache_policy, claims, timed))


def _headers(policy: CachePolicy, claims: Claims, timed: Timed) -> list[Header]:
    """Campaign-wide timers: the CDN keeps each bucket's render until the bucket ends."""
    if timed.served.fallback_reason is not None:
        return policy.fallback_image()
    if timed.shared_ttl is not None:
        return policy.shared_image(claims.campaign, timed.shared_ttl)
    assert claims.recipient is not None  # personal timers need a recipient, else they fall back
    return policy.image(claims.recipient, claims.campaign)
