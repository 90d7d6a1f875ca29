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

from collections.abc import Awaitable, Mapping
from datetime import UTC, tzinfo
from typing import Any, cast

from app.decisions.context import OpenContext, country_of, device_of
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
    """The open's context (kept on the request for its exposure)."""
    services, claims, campaign = request.services, request.claims, request.campaign
    user_agent = country = None
    trusted = services.settings.country_header
    header = trusted.lower().encode() if trusted else b""
    for key, value in request.scope["headers"]:
        if key == b"user-agent":
            user_agent = value.decode("latin-1")
        elif key == header:
            country = value.decode("latin-1")
    peer = request.scope.get("client")
    address = None if peer is None else cast(str, peer[0])
    issued = None if claims is None else claims.issued_at
    since = None if issued is None else request.now - issued
    fetch_class = services.images.classifier.classify(user_agent, address, since)
    if campaign is None:
        zone: tzinfo = UTC
    else:
        zone = campaign.zones.default if profile is None else campaign.zones.of(profile)
    context = OpenContext(
        at=request.now,
        zone=zone,
        fetch_class=fetch_class,
        device=device_of(user_agent, fetch_class),
        country=country_of(country, fetch_class),
        recipient=None if claims is None else claims.recipient,
        profile=profile,
    )
    request.context = context
    return context


def fetch_class_of(request: Open) -> str:
    """The open's fetch class for its exposure: the decided context's, else classified now (memoized)."""
    if request.context is not None:
        return request.context.fetch_class
    return open_context(request, None).fetch_class
