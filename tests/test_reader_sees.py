"""The AMP part and the HTML part show a reader the same values (prices, points, dates).

A real server answers the amp-list URLs the send-time AMP part carries; each list's
``<template type="amp-mustache">`` is rendered by mustache.js (the library amp-mustache is built on)
against that JSON, and every rendered item's visible text must appear, exactly, in the HTML part
rendered for the same recipient. Values are formatted once, on the server: mustache never formats.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest

from app.config import Settings
from app.demo import demo_rows, recipient_id
from tests.amp_lists import Reader, expand, reader_server, visible_text
from tests.amp_tools import Mustache
from tests.conftest import DEMO_COUNT, load_rows

pytestmark = pytest.mark.server

# Values mustache.js would once have shown differently from the HTML part: a zero price ("$0.00", not
# hidden by {{#price}}), 19.5 ("$19.50", not "$19.5"), grouping, half-up rounding, zero points and qty,
# and an instant that is already the next day in the reader's own zone.
EDGES = {
    "first_name": "Zoë & <Bo>",
    "zone": "Asia/Tokyo",
    "loyalty": {"points": 0, "tier": "gold", "expires_at": "2027-12-31T20:00:00Z"},
    "recommendations": [
        {"name": "Free sticker", "price": 0, "sku": "sku-0006", "image": "sku-0006.jpg"},
        {"name": "Merino wool socks", "price": 19.5, "sku": "sku-0001", "image": "sku-0001.jpg"},
        {"name": "Tent for six", "price": 1234.5, "sku": "sku-0003", "image": "sku-0003.jpg"},
        {"name": "Camp mug", "price": 2.675, "sku": "sku-0007", "image": "sku-0007.jpg"},
    ],
    "cart": {
        "items": [
            {"name": "Gift card", "price": 0, "qty": 0, "sku": "gift"},
            {"name": "Merino wool socks", "price": 19.5, "qty": 1200, "sku": "sku-0001", "image": "a.jpg"},
            {"name": "Tent for six", "price": 1234.5, "sku": "sku-0003"},
        ]
    },
}
CAMPAIGNS = ("demo", "cart-recovery", "weekly-picks")


def profiles() -> dict[str, dict[str, Any]]:
    demo = {rid: orjson.loads(data) for rid, data in demo_rows(DEMO_COUNT)}
    return {"edges": EDGES, recipient_id(3): demo[recipient_id(3)]}


def seen_in_amp(reader: Reader, mustache: Mustache, campaign: str, recipient: str) -> tuple[list[str], str]:
    """The visible text of every rendered amp-list item, and the HTML part's visible text."""
    parts = reader.sendtime.render(campaign, recipient, profiles()[recipient])
    items = [
        visible_text(item) for one in expand(parts.amp, reader.client, mustache) for item in one.rendered
    ]
    return items, visible_text(parts.html)


@pytest.fixture
def reader(settings: Settings, tmp_path: Path) -> Any:
    load_rows(settings.database_url, [("edges", orjson.dumps(EDGES))])
    with reader_server(settings, tmp_path) as served:
        yield served


def test_every_amp_list_item_reads_as_in_the_html_part(reader: Reader, mustache: Mustache) -> None:
    for campaign in CAMPAIGNS:
        for recipient in profiles():
            items, html = seen_in_amp(reader, mustache, campaign, recipient)
            assert items, (campaign, recipient)
            for item in items:
                assert item in html, f"{campaign} / {recipient}: AMP shows {item!r}, not in the HTML part"


def test_edge_values_show_formatted_in_amp(reader: Reader, mustache: Mustache) -> None:
    demo, _ = seen_in_amp(reader, mustache, "demo", "edges")
    hello, picks = demo
    # Zero points still show; the instant is already January 1 in Tokyo (the profile's zone).
    assert hello == "Hi Zoë & <Bo>! You have 0 points (gold member), valid until January 1, 2028."
    assert picks == ("Free sticker $0.00 Merino wool socks $19.50 Tent for six $1,234.50 Camp mug $2.68")
    (weekly,), _ = seen_in_amp(reader, mustache, "weekly-picks", "edges")
    assert weekly == picks  # the same four tiles
    cart, _ = seen_in_amp(reader, mustache, "cart-recovery", "edges")
    assert cart == [
        "Gift card Qty 0 $0.00",
        "Merino wool socks Qty 1,200 $19.50",
        "Tent for six Qty 1 $1,234.50",  # the field's default, formatted like any value
    ]


def test_dates_follow_the_campaign_zone_without_one_in_the_profile(
    reader: Reader, mustache: Mustache
) -> None:
    (hello, _), html = seen_in_amp(reader, mustache, "demo", recipient_id(3))
    # 2027-12-31T23:59:59Z in America/New_York, the demo campaign's zone.
    assert hello.endswith("valid until December 31, 2027.")
    assert hello in html
