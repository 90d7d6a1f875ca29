"""Click-through: ``/v1/{token}/click/{block}/{slot}``, the one open-time route that redirects.

A 302 to the link the reader was shown in that slot: what the click URL carries sealed (``?to=``: an
item of the HTML part, as it was sent, ``app.security.click_seal``), else what the open recorded (the
variant and the item, ``app.decisions.clicks``), else what the block shows now (the same decision, the
current data).
The link is checked against the block's allowed hosts every time (``safe_target``): nothing from the
click's URL becomes a target. A bad or expired token, an unknown block or slot, or a link that is not
allowed lands on the campaign's ``click_default``; without one (a token naming no campaign of ours),
a small page says the link is not available. Never an error status: a mail client shows those as a
broken link. ``no-store`` (a click must reach us each time) and ``no-referrer`` (the URL has a token).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from app.campaigns.loader import Campaign, ListBlock
from app.content.lists import Entry
from app.decisions.clicks import MAX_SLOTS, Shown, safe_target, with_clicks
from app.decisions.decide import Decision
from app.decisions.exposure import DEFAULT_VARIANT
from app.images.layout import ImageBlock
from app.open_time.deciding import decide
from app.open_time.kind import DegradingKind, Open, Target
from app.open_time.reasons import Reason
from app.open_time.respond import NO_REFERRER, Answer

NO_STORE = (b"cache-control", b"no-store")
UNAVAILABLE = b"<!doctype html><html lang=en><head><meta charset=utf-8><title>Link unavailable</title></head>"
UNAVAILABLE += b"<body><p>This link is no longer available.</p></body></html>"
PAGE_HEADERS = ((b"content-type", b"text/html; charset=utf-8"), NO_STORE, NO_REFERRER)


class ClickKind(DegradingKind):
    name = "click"

    def find(self, campaign: Campaign, block: str) -> ListBlock | ImageBlock | None:
        listed = campaign.lists.get(block)
        if listed is not None and listed.click_field is not None:
            return listed
        image = campaign.images.get(block)
        if image is not None and _links(image):
            return image
        return None

    def fallback(self, request: Open, block: ListBlock | ImageBlock | None, reason: Reason) -> Answer:
        campaign = request.campaign
        if campaign is None or campaign.click_default is None:
            return Answer(UNAVAILABLE, reason, PAGE_HEADERS)
        return redirect(campaign.click_default, reason)

    async def render(self, request: Open, block: ListBlock | ImageBlock) -> Answer:
        claims, campaign, slot = request.claims, request.campaign, request.target.slot
        assert claims is not None and claims.recipient is not None and campaign is not None
        key = (claims.campaign, request.target.block, claims.recipient)
        shown = _sealed(request, key, slot)
        if shown is None:
            shown = await request.services.clicks.recall(key)
        if shown is None:
            shown = await _shown_now(request, block, claims.campaign, claims.recipient)
        request.decision = Decision(block, shown.variant, shown.experiment, None, "clicked")
        link = shown.links[slot] if slot < len(shown.links) else ""
        if link and safe_target(link, _hosts(block)):
            return redirect(link, None)
        return self.fallback(request, block, Reason.NO_DATA)


def _sealed(request: Open, key: tuple[str, str, str], slot: int) -> Shown | None:
    """What a send-time item showed, from its click URL's ``to`` (None: none, or not ours for this
    click); as a ``Shown`` whose only link is at ``slot``."""
    value = _query_value(request.scope.get("query_string", b""), b"to")
    if value is None:
        return None
    campaign, block, recipient = key
    opened = request.services.sendtime.click_sealer.open(value, campaign, recipient, block, slot)
    if opened is None:
        return None
    return Shown(opened.variant, opened.experiment, ("",) * slot + (opened.link,))


def _query_value(query: bytes, name: bytes) -> str | None:
    """One parameter's value; seals are base64url and a dot, so nothing needs unquoting."""
    for pair in query.split(b"&"):
        key, _, value = pair.partition(b"=")
        if key == name:
            return value.decode("ascii", "replace")
    return None


async def _shown_now(request: Open, block: ListBlock | ImageBlock, campaign: str, recipient: str) -> Shown:
    """Nothing recorded (expired, evicted, never opened here): the decision and the data of now."""
    variant, experiment = DEFAULT_VARIANT, None
    shown_block: Any = block
    if block.decider is not None:
        decided = decide(request, block)
        decision = decided if isinstance(decided, Decision) else await decided
        shown_block, variant, experiment = decision.block, decision.variant, decision.experiment
    if isinstance(shown_block, ImageBlock):
        return Shown(variant, experiment, (shown_block.link or "",))
    lists = request.services.lists
    entry: Entry | None = lists.cached(campaign, shown_block, recipient)
    if entry is None:
        entry = await lists.load(campaign, shown_block, recipient)
    if isinstance(entry, str):
        links = with_clicks(shown_block.fallback_body, shown_block.click_field, shown_block.click_hosts)[1]
        return Shown(variant, experiment, links)
    return Shown(variant, experiment, entry.links)


def _hosts(block: ListBlock | ImageBlock) -> frozenset[str]:
    """Where this block's clicks may go: its (and its variants') allowed hosts or configured links."""
    blocks = [block, *(() if block.decider is None else block.decider.variants.values())]
    hosts: set[str] = set()
    for each in blocks:
        if isinstance(each, ListBlock):
            hosts |= each.click_hosts
        elif each.link is not None:
            hosts.add(_host(each.link))
    return frozenset(hosts)


def _host(link: str) -> str:
    return (urlsplit(link).hostname or "").lower()


def _links(image: ImageBlock) -> bool:
    variants = () if image.decider is None else image.decider.variants.values()
    return image.link is not None or any(v.link is not None for v in variants)


def redirect(url: str, reason: str | None) -> Answer:
    headers = ((b"location", url.encode()), NO_STORE, NO_REFERRER, (b"content-type", b"text/plain"))
    return Answer(b"", reason, headers, status=302)


def parse(parts: list[str]) -> Target | None:
    if len(parts) != 6 or not parts[5].isdigit() or len(parts[5]) > 3:
        return None
    slot = int(parts[5])
    if slot >= MAX_SLOTS:
        return None
    return Target(parts[2], parts[4], slot=slot)
