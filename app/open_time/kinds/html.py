"""HTML fragments: ``/v1/{token}/html/{block}``, a list block's items through ``fragments/<block>.html``.

For ESPs that fetch content at send time (Braze Connected Content and the like). Personal: the items
the amp-list answer would have, rendered with ``live`` true. Fallback: the block's fallback items
through the same template (``live`` false; bad tokens that name the campaign too), or an empty body
when no fragment is known.
"""

from __future__ import annotations

from typing import Any

import orjson

from app.campaigns.loader import Campaign, ListBlock
from app.decisions.decide import DEFAULT_PICKS, Decision
from app.open_time.clicking import block_name, remember_shown, with_click_urls
from app.open_time.deciding import decide
from app.open_time.kind import DegradingKind, Open, Target
from app.open_time.reasons import Reason
from app.open_time.respond import HTML_HEADERS, Answer


class FragmentKind(DegradingKind):
    name = "fragment"

    def find(self, campaign: Campaign, block: str) -> ListBlock | None:
        return campaign.lists.get(block) if block in campaign.fragments else None

    def fallback(self, request: Open, block: ListBlock | None, reason: Reason) -> Answer:
        if block is None or request.campaign is None:
            return Answer(b"", reason, HTML_HEADERS)
        html = _render(request, block, block.fallback_body, live=False)
        return Answer(html, reason, HTML_HEADERS)

    async def render(self, request: Open, block: ListBlock) -> Answer:
        lists, claims = request.services.lists, request.claims
        assert claims is not None and claims.recipient is not None
        if block.decider is not None:
            decided = decide(request, block)
            block = (decided if isinstance(decided, Decision) else await decided).block
        entry = lists.cached(claims.campaign, block, claims.recipient)
        if entry is None:
            entry = await lists.load(claims.campaign, block, claims.recipient)
        if isinstance(entry, str):
            return Answer(_render(request, block, block.fallback_body, live=False), entry, HTML_HEADERS)
        if block.click_field is not None:
            remember_shown(request, block, entry.links)
        age = max(request.services.clock() - entry.updated_at, 0.0)
        return Answer(_render(request, block, entry.body, live=True), None, HTML_HEADERS, age)


def _render(request: Open, block: ListBlock, body: bytes, *, live: bool) -> bytes:
    """Through ``fragments/<block>~<variant>.html`` when the variant has its own, else the block's;
    the template sees ``variant`` (name, experiment, rule, why) and each item's ``click`` URL."""
    services, campaign = request.services, request.campaign
    assert campaign is not None  # a block is only found through its campaign
    if block.click_field is not None:
        body = with_click_urls(request, block, body)
    items: list[Any] = orjson.loads(body).get("items", [])
    name = block_name(block)
    decision = request.decision
    context = {
        "items": items,
        "live": live,
        "block": name,
        "campaign": {"name": campaign.name},
        "variant": DEFAULT_PICKS if decision is None else decision.picks(),
    }
    template = block.name if block.name in campaign.fragment_variants else name
    return services.templates.render(campaign.template(f"fragments/{template}.html"), context).encode()


def parse(parts: list[str]) -> Target | None:
    return Target(parts[2], parts[4]) if len(parts) == 5 else None
