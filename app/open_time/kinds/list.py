"""amp-list JSON: ``/v1/{token}/list/{block}.json`` (the hot path).

Personal: the block's items from the cache or the profile, with the age of the data. Fallback: the
block's static ``fallback`` items (a bad token that still names a campaign gets them too: they are the
same public content every recipient without data sees). When no block can be told at all (a token
that names no campaign of ours, a block that is not, or no longer, defined) the answer is a 404 JSON
error: amp-list shows the author's ``<div fallback>`` for a failed fetch, where an empty
``{"items":[]}`` would leave an empty box. ``private, no-store``: the answer depends on the
requesting sender (AMP CORS) and on the recipient.
"""

from __future__ import annotations

from collections.abc import Awaitable

from app.campaigns.loader import Campaign, ListBlock
from app.content.lists import Entry
from app.decisions.decide import Decision
from app.open_time.clicking import remember_shown, with_click_urls
from app.open_time.deciding import decide
from app.open_time.kind import DegradingKind, Open, Reply, Target
from app.open_time.reasons import Reason
from app.open_time.respond import JSON_HEADERS, Answer, json_answer

NO_BLOCK = "no list block here: the email shows its own fallback"


class ListKind(DegradingKind):
    name = "list"

    def find(self, campaign: Campaign, block: str) -> ListBlock | None:
        return campaign.lists.get(block)

    def fallback(self, request: Open, block: ListBlock | None, reason: Reason) -> Answer:
        if block is None:
            return json_answer(404, {"error": NO_BLOCK, "reason": reason}, reason)
        if block.click_field is not None:
            return Answer(with_click_urls(request, block, block.fallback_body), reason, JSON_HEADERS)
        return Answer(block.fallback_body, reason, JSON_HEADERS)

    def render(self, request: Open, block: ListBlock) -> Reply:
        if block.decider is not None:  # the one check a block without rules pays
            decided = decide(request, block)
            if not isinstance(decided, Decision):
                return self._decided_later(request, decided)
            return self._serve(request, decided.block)
        claims = request.claims  # inline, not _serve: the path of every open without rules
        assert claims is not None and claims.recipient is not None
        entry = request.services.lists.cached(claims.campaign, block, claims.recipient)
        if entry is None:
            return self._load(request, block, claims.campaign, claims.recipient)
        if block.click_field is not None:
            return _clicked(request, block, entry, request.now)
        return _answer(block, entry, request.now)

    def _serve(self, request: Open, block: ListBlock) -> Reply:
        claims = request.claims
        assert claims is not None and claims.recipient is not None
        entry = request.services.lists.cached(claims.campaign, block, claims.recipient)
        if entry is None:
            return self._load(request, block, claims.campaign, claims.recipient)
        if block.click_field is not None:
            return _clicked(request, block, entry, request.now)
        return _answer(block, entry, request.now)

    async def _decided_later(self, request: Open, decided: Awaitable[Decision[ListBlock]]) -> Answer:
        """The rules wait for the recipient's profile (not cached yet): decide, then serve."""
        served = self._serve(request, (await decided).block)
        return served if isinstance(served, Answer) else await served

    async def _load(self, request: Open, block: ListBlock, campaign: str, recipient: str) -> Answer:
        entry = await request.services.lists.load(campaign, block, recipient)
        if block.click_field is not None:
            return _clicked(request, block, entry, request.services.clock())
        return _answer(block, entry, request.services.clock())


def _answer(block: ListBlock, entry: Entry, now: float) -> Answer:
    """The rendered items with the age of their data, or the block's fallback and why."""
    if isinstance(entry, str):
        return Answer(block.fallback_body, entry, JSON_HEADERS)
    return Answer(entry.body, None, JSON_HEADERS, max(now - entry.updated_at, 0.0))


def _clicked(request: Open, block: ListBlock, entry: Entry, now: float) -> Answer:
    """A click-tracked block: what is shown is remembered for its clicks, items get their click URLs."""
    if isinstance(entry, str):
        return Answer(with_click_urls(request, block, block.fallback_body), entry, JSON_HEADERS)
    remember_shown(request, block, entry.links)
    body = with_click_urls(request, block, entry.body)
    return Answer(body, None, JSON_HEADERS, max(now - entry.updated_at, 0.0))


def parse(parts: list[str]) -> Target | None:
    if len(parts) != 5 or not parts[4].endswith(".json"):
        return None
    return Target(parts[2], parts[4][:-5])
