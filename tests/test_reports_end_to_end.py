"""Opens and clicks of the flash-sale campaign, through the open-time routes, reach its report: the
pipeline offers each answered open and click to the lifespan's recorder, which flushes them into the
store, and ``GET /api/campaigns/{c}/report`` counts each click under the variant its reader was shown."""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

from starlette.testclient import TestClient

from app.app import create_app
from app.config import Settings
from app.demo import demo_rows, recipient_id
from app.security.tokens import TokenSigner
from tests.conftest import BASE_URL, SENDER, load_rows
from tests.metrics_tools import sample
from tests.test_routes_api import make_key

CAMPAIGN = "flash-sale"
REPORT = f"/api/campaigns/{CAMPAIGN}/report"
READERS, CLICKERS = 40, 12
# The banner's link says which design the reader saw (amp_templates/flash-sale/blocks.toml).
SHOWN = {"banner=urgent": "urgent", "banner=calm": "calm"}


def variant_of(location: str) -> str:
    return next((name for marker, name in SHOWN.items() if marker in location), "holdout")


def report(client: TestClient, key: str, opens: int, clicks: int) -> dict[str, Any]:
    deadline = time.monotonic() + 10
    while True:
        body: dict[str, Any] = client.get(REPORT, headers={"authorization": f"Bearer {key}"}).json()
        rows = [r for r in body["variants"] if r["block"] == "banner"]
        if sum(r["exposures"] for r in rows) >= opens and sum(r["clicks"] for r in rows) >= clicks:
            return body
        assert time.monotonic() < deadline, body
        time.sleep(0.05)


def test_opens_and_clicks_reach_the_report_under_the_variant_shown(
    settings: Settings, signer: TokenSigner
) -> None:
    load_rows(settings.database_url, list(demo_rows(READERS)))
    key = make_key(settings, "reports:read")
    app = create_app(settings.replace(exposure_flush_seconds=0.05))
    now = int(time.time())
    clicked: Counter[str] = Counter()
    with TestClient(app, base_url=BASE_URL, follow_redirects=False) as client:
        for index in range(1, READERS + 1):
            token = signer.sign(CAMPAIGN, recipient_id(index), now=now)
            opened = client.get(f"/v1/{token}/img/banner.png")
            assert opened.status_code == 200 and "x-opentime-fallback" not in opened.headers
            if index <= CLICKERS:
                click = client.get(f"/v1/{token}/click/banner/0")
                assert click.status_code == 302
                clicked[variant_of(click.headers["location"])] += 1
        body = report(client, key, READERS, CLICKERS)
    rows = {r["variant"]: r for r in body["variants"] if r["block"] == "banner"}
    assert sum(r["exposures"] for r in rows.values()) == READERS
    assert {name: r["clicks"] for name, r in rows.items() if r["clicks"]} == dict(clicked)
    assert set(rows) <= {"urgent", "calm", "holdout"} and len(rows) >= 2  # 40 readers split


def recorded(client: TestClient) -> float:
    return sample(client.get("/metrics").text, "opentime_exposures_recorded_total")


def test_a_campaign_without_decisions_records_nothing(settings: Settings, signer: TokenSigner) -> None:
    # Its opens pay nothing for exposures (the hot path of every campaign that does not measure).
    load_rows(settings.database_url, list(demo_rows(3)))
    now = int(time.time())
    with TestClient(create_app(settings), base_url=BASE_URL) as client:
        for index in (1, 2, 3):
            token = signer.sign("demo", recipient_id(index), now=now)
            assert (
                client.get(f"/v1/{token}/list/picks.json", headers={"AMP-Email-Sender": SENDER}).status_code
                == 200
            )
        assert recorded(client) == 0
        token = signer.sign(CAMPAIGN, recipient_id(1), now=now)
        assert client.get(f"/v1/{token}/img/banner.png").status_code == 200
        assert recorded(client) == 1  # flash-sale measures its experiment
