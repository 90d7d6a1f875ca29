"""amp-list JSON: ``/v1/{token}/list/{block}.json`` (the hot path).

Personal: the block's items from the cache or the profile, with the age of the data. Fallback: the
block's static ``fallback`` items, or ``{"items":[]}`` when no block is known. ``private, no-store``:
the answer depends on the requesting sender (AMP CORS) and on the recipient.
"""

from __future__ import annotations

from collections.abc import Mapping

from app.campaigns.loader import Campaign, ListBlock
from app.open_time.kind import DegradingKind, Open, Target
from app.open_time.reasons import Reason
from app.open_time.respond import JSON_HEADERS, Answer

GENERIC_FALLBACK = b'{"items":[]}'


class ListKind(DegradingKind):
    name = "list"

    def blocks(self, campaign: Campaign) -> Mapping[str, ListBlock]:
        return campaign.lists

    def fallback(self, request: Open, block: ListBlock | None, reason: Reason) -> Answer:
        return Answer(GENERIC_FALLBACK if block is None else block.fallback_body, reason, JSON_HEADERS)

    async def render(self, request: Open, block: ListBlock) -> Answer:
        lists, claims = request.services.lists, request.claims
        assert claims is not None and claims.recipient is not None
        now = request.now
        outcome = lists.cached(claims.campaign, block, claims.recipient)
        if outcome is None:
            outcome = await lists.load(claims.campaign, block, claims.recipient)
            now = request.services.clock()
        updated_at = outcome.updated_at
        age = None if updated_at is None else max(now - updated_at, 0.0)
        return Answer(outcome.body, outcome.fallback_reason, JSON_HEADERS, age)


def parse(parts: list[str]) -> Target | None:
    if len(parts) != 5 or not parts[4].endswith(".json"):
        return None
    return Target(parts[2], parts[4][:-5])
