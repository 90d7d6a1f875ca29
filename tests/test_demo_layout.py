"""The demo's AMP part laid out by Chromium at 600 px, with each amp-list expanded by mustache.js.

The AMP runtime cannot load offline, so the test does what it would: it fetches each amp-list's JSON
from a real server, renders the list's template per item with mustache.js, puts the items where
amp-list puts them (a ``div role="list"`` inside the element) and lets plain CSS lay them out. A
small stylesheet stands in for the runtime's layout rules (``amp-img layout=responsive`` is a block
as wide as its container with the declared aspect ratio; ``amp-list layout=fixed-height`` has the
declared height). At 600 px (the email's width) and 375 px (a phone); the screenshots land in
``test-artifacts/demo-amp-600.png`` and ``demo-amp-375.png`` for a person to look at.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import orjson
import pytest

from app.config import PROJECT_ROOT, Settings
from app.demo import demo_rows, recipient_id
from tests.amp_lists import Expanded, expand, reader_server, substituted
from tests.amp_tools import Mustache
from tests.conftest import DEMO_COUNT
from tests.test_preview_browser import browser_tools, chromium  # noqa: F401  (fixture)

pytestmark = [pytest.mark.server, pytest.mark.usefixtures("browser_tools")]

ARTIFACTS = PROJECT_ROOT / "test-artifacts"
WIDTHS = (600, 375)
# What the AMP runtime's layout CSS does for the layouts the demo uses; the box of each amp-list is
# outlined, and its overflow left visible, so the screenshot shows anything that does not fit.
RUNTIME_SHIM = """<style>
  amp-list { display: block; position: relative; outline: 2px dashed #e4572e; }
  img[layout=responsive] { display: block; width: 100%; height: auto; }
</style>"""
MEASURE = """() => [...document.querySelectorAll('amp-list')].map((list) => {
  const box = list.getBoundingClientRect();
  const content = list.querySelector('[role=list]');
  const rect = (e) => {
    const r = e.getBoundingClientRect();
    return {x: r.x, y: r.y, w: r.width, h: r.height};
  };
  return {
    src: list.getAttribute('src'),
    declared: Number(list.getAttribute('height')),
    box: rect(list),
    content: content.getBoundingClientRect().height,
    tiles: [...list.querySelectorAll('.tile')].map(rect),
    images: [...list.querySelectorAll('img')].map((i) => ({src: i.currentSrc, loaded: i.naturalWidth})),
  };
})"""


def browser_ready(amp: str, expanded: list[Expanded]) -> str:
    """The AMP part with lists expanded, as plain HTML: no boilerplate hiding the body, no AMP scripts,
    amp-img as img (keeping width, height and layout), each amp-list at its declared height."""
    doc = substituted(amp, expanded)
    doc = re.sub(r"<style amp4email-boilerplate>.*?</style>", "", doc, flags=re.S)
    doc = re.sub(r"<script\b[^>]*></script>", "", doc)
    doc = re.sub(r"<amp-img\b([^>]*)></amp-img>", r"<img\1>", doc)
    doc = re.sub(r'(<amp-list\b[^>]*\bheight="(\d+)")', r'\1 style="height:\2px"', doc)
    return doc.replace("</head>", RUNTIME_SHIM + "</head>", 1)


def demo_profile_of(recipient: str) -> dict[str, Any]:
    profile: dict[str, Any] = dict((rid, orjson.loads(data)) for rid, data in demo_rows(DEMO_COUNT))[
        recipient
    ]
    return profile


def lay_out(html: str) -> dict[int, list[dict[str, Any]]]:
    """Each amp-list's box, content and tiles at each width (and a screenshot of each)."""
    measured = {}
    ARTIFACTS.mkdir(exist_ok=True)
    with chromium() as browser:
        for width in WIDTHS:
            page = browser.new_page(viewport={"width": width, "height": 900})
            page.set_content(html, wait_until="load")
            measured[width] = page.evaluate(MEASURE)
            page.screenshot(path=str(ARTIFACTS / f"demo-amp-{width}.png"), full_page=True)
            page.close()
    return measured


def test_demo_picks_fit_their_box_at_600px(mustache: Mustache, settings: Settings, tmp_path: Path) -> None:
    recipient = recipient_id(3)
    with reader_server(settings, tmp_path) as reader:
        parts = reader.sendtime.render("demo", recipient, demo_profile_of(recipient))
        expanded = expand(parts.amp, reader.client, mustache)
        # Render the banner once first: a cold process on a busy machine can miss its 300 ms budget
        # while the browser fetches everything at once, and the screenshot would show the fallback.
        banner = re.search(r'<amp-img src="([^"]+/img/banner@2x\.png)"', parts.amp)
        assert banner is not None
        reader.client.get(banner.group(1))
        widths = lay_out(browser_ready(parts.amp, expanded))

    for width, lists in widths.items():  # nothing spills out of the box amp-list reserves (it is cut off)
        for one in lists:
            assert one["content"] <= one["declared"], (width, one)
    picks = next(one for one in widths[600] if one["src"].endswith("/list/picks.json"))
    tiles = picks["tiles"]
    assert len(tiles) == 4
    columns, rows = sorted({t["x"] for t in tiles}), sorted({t["y"] for t in tiles})
    assert len(columns) == 2 and len(rows) == 2, tiles  # a two-by-two grid
    box = picks["box"]
    for tile in tiles:
        assert box["x"] <= tile["x"] and tile["x"] + tile["w"] <= box["x"] + box["w"] + 0.5
        assert tile["y"] + tile["h"] <= box["y"] + picks["declared"] + 0.5
    # Every product picture comes from the demo server itself, and loads.
    assert len(picks["images"]) == 4
    for image in picks["images"]:
        assert image["src"].startswith(f"{reader.base_url}/static/demo/products/"), image
        assert image["loaded"] > 0, image
