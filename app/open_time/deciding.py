"""Open-time decisions at the edge: the open's context read from the request, then the block's
decider (``app.decisions``) run on it.

Only blocks with a decider come here (the kinds check ``block.decider`` first). The context is read
once per request: the User-Agent and the trusted country header (``country_header``) in one pass over
the headers, the fetch class from the classifier's memo (not counted again: images count their own).
A decider that reads profile fields, or time rules in a campaign whose zone comes from the profile
(``zone_field``), waits for the profile (the cached one on a warm open) within the block's budget;
without it the rules see no profile and the campaign's zone.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Mapping
from datetime import UTC, tzinfo
from typing import Any, cast

from app.decisions.context import REVEALING, OpenContext, country_of, device_of
from app.decisions.decide import Decision
from app.open_time.kind import Open


def decide(request: Open, block: Any) -> Decision[Any] | Awaitable[Decision[Any]]:
    """The decision now, or an awaitable of it when the rules need the recipient's profile."""
    decider = block.decider
    claims = request.claims
    profile = None
    if decider.needs_profile and claims is not None and claims.recipient is not None:
        found = request.services.lists.found_now(claims.recipient)
        if found is None:  # not cached: wait for it (within the block's budget)
            return _with_profile(request, block, claims.recipient)
        profile = None if isinstance(found, str) else found.attributes
    context = open_context(request, profile)
    decision: Decision[Any] = decider.decide(block, context)
    request.decision = decision
    return decision


async def _with_profile(request: Open, block: Any, recipient: str) -> Decision[Any]:
    found = await request.services.lists.find(recipient, block.budget_s)
    context = open_context(request, None if isinstance(found, str) else found.attributes)
    decision: Decision[Any] = block.decider.decide(block, context)
    request.decision = decision
    return decision


def open_context(request: Open, profile: Mapping[str, Any] | None) -> OpenContext:
    """The open's context (kept on the request for its exposure). Runs on every decided open, so
    written for the interpreter: one pass over the headers, positional construction, and device and
    country only looked at when the fetch is the reader's own."""
    services, claims, campaign, scope = request.services, request.claims, request.campaign, request.scope
    user_agent = country = None
    header = _header_name(services.settings.country_header)
    for key, value in scope["headers"]:
        if key == b"user-agent":
            user_agent = value.decode("latin-1")
        elif key == header:
            country = value.decode("latin-1")
    peer = scope.get("client")
    address = None if peer is None else cast(str, peer[0])
    recipient = issued = None
    if claims is not None:
        recipient, issued = claims.recipient, claims.issued_at
    since = None if issued is None else request.now - issued
    fetch_class = services.images.classifier.classify(user_agent, address, since)
    if campaign is None:
        zone: tzinfo = UTC
    else:
        zone = campaign.zones.default if profile is None else campaign.zones.of(profile)
    if fetch_class in REVEALING:
        device, country = device_of(user_agent, fetch_class), country_of(country, fetch_class)
    else:  # a proxy's User-Agent and place are not the reader's
        device, country = "unknown", None
    context = OpenContext(request.now, zone, fetch_class, device, country, recipient, profile)
    request.context = context
    return context


@functools.lru_cache(maxsize=8)
def _header_name(trusted: str | None) -> bytes | None:
    """The trusted country header as ASGI names it (lower case), or None when none is trusted."""
    return trusted.lower().encode() if trusted else None


def fetch_class_of(request: Open) -> str:
    """The open's fetch class for its exposure: the decided context's, else classified now (memoized)."""
    if request.context is not None:
        return request.context.fetch_class
    return open_context(request, None).fetch_class
