"""Click-through at open time: click URLs into a click-tracked list's items, and what was shown
remembered for the clicks (``app.decisions.clicks``)."""

from __future__ import annotations

from typing import Any

from app.decisions.clicks import CLICK_MARK, Shown, click_prefix
from app.decisions.exposure import DEFAULT_VARIANT
from app.open_time.kind import Open


def block_name(block: Any) -> str:
    """The name URLs use: a variant's block answers under its block's name."""
    name: str = block.name
    return name.partition("~")[0]


def with_click_urls(request: Open, block: Any, body: bytes) -> bytes:
    """The body with each item's click mark made its URL: this base, the presented token, the block."""
    prefix = click_prefix(request.services.sendtime.base_url, request.target.token, block_name(block))
    return body.replace(CLICK_MARK, prefix)


def remember_shown(request: Open, block: Any, links: tuple[str, ...]) -> None:
    claims = request.claims
    if claims is None or claims.recipient is None:
        return
    decision = request.decision
    if decision is None:
        shown = Shown(DEFAULT_VARIANT, None, links)
    else:
        shown = Shown(decision.variant, decision.experiment, links)
    key = (claims.campaign, block_name(block), claims.recipient)
    request.services.clicks.remember(key, shown)
