"""GET /api/campaigns/{c}/report in-process, with the lifespan's real recorder: exposures recorded
through ``services.exposures`` (the sink the open-time pipeline calls) reach the report after a
flush; scopes, bad times and unknown campaigns are refused; shutdown flushes what is buffered;
/metrics counts it all."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import pytest
from starlette.testclient import TestClient

from app.app import create_app
from app.config import Settings
from app.decisions.exposure import Event, Exposure
from app.store import open_store
from app.store.base import ExposureCount
from tests.conftest import BASE_URL
from tests.test_routes_api import make_key

REPORT = "/api/campaigns/demo/report"


def bearer(key: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}


def seen(variant: str, event: Event, fetch_class: str = "direct", at: float | None = None) -> Exposure:
    when = time.time() if at is None else at
    return Exposure("demo", "hello", variant, "subject", fetch_class, "ok", "list", event, when)


def record(client: TestClient, exposures: list[Exposure]) -> None:
    sink = client.app_state["services"].exposures
    for exposure in exposures:
        client.portal.call(sink.record, exposure)  # on the server's loop, as the pipeline calls it


@pytest.fixture
def fast(settings: Settings) -> Iterator[TestClient]:
    app = create_app(settings.replace(exposure_flush_seconds=0.05))
    with TestClient(app, base_url=BASE_URL, follow_redirects=False) as client:
        yield client


def wait_for(client: TestClient, key: str, exposures: int, clicks: int) -> dict[str, Any]:
    deadline = time.monotonic() + 10
    while True:
        body: dict[str, Any] = client.get(REPORT, headers=bearer(key)).json()
        rows = body["variants"]
        if sum(r["exposures"] for r in rows) >= exposures and sum(r["clicks"] for r in rows) >= clicks:
            return body
        assert time.monotonic() < deadline, body
        time.sleep(0.05)


def test_recorded_exposures_are_reported_after_a_flush(fast: TestClient, settings: Settings) -> None:
    key = make_key(settings, "reports:read")
    record(fast, [seen("a", "open")] * 40 + [seen("a", "open", "apple-mpp")] * 10 + [seen("a", "click")] * 5)
    record(fast, [seen("b", "open")] * 50 + [seen("b", "click")] * 10 + [seen("b", "click", "scanner")] * 7)
    body = wait_for(fast, key, 100, 15)
    response = fast.get(REPORT, headers=bearer(key))
    assert response.headers["cache-control"] == "no-store"
    assert body["campaign"] == "demo" and body["since"] is None
    [opens] = body["opens"]
    assert (opens["block"], opens["total"], opens["human"], opens["apple_prefetch"]) == ("hello", 100, 90, 10)
    rows = {r["variant"]: r for r in body["variants"]}
    assert (rows["a"]["role"], rows["a"]["exposures"], rows["a"]["clicks"], rows["a"]["ctr"]) == (
        "control",
        50,
        5,
        0.1,
    )
    assert (rows["b"]["role"], rows["b"]["exposures"], rows["b"]["clicks"], rows["b"]["ctr"]) == (
        "variant",
        50,
        10,
        0.2,
    )  # the scanner's 7 clicks are not in it
    assert rows["b"]["p_value"] is not None and 0 < rows["b"]["p_value"] < 1
    metrics = fast.get("/metrics").text
    assert "opentime_exposures_recorded_total 122.0" in metrics
    assert "opentime_exposures_dropped_total 0.0" in metrics


def test_since_and_until_select_hours(fast: TestClient, settings: Settings) -> None:
    key = make_key(settings, "admin")  # admin covers reports:read
    record(fast, [seen("a", "open", at=1_714_557_600.0), seen("a", "open", at=1_714_557_600.0 + 7200)])
    wait_for(fast, key, 2, 0)
    since = fast.get(REPORT, params={"since": "2024-05-01T11:00Z"}, headers=bearer(key)).json()
    assert since["since"] == "2024-05-01T11:00:00Z" and since["variants"][0]["exposures"] == 1
    until = fast.get(REPORT, params={"until": "2024-05-01T11:00Z"}, headers=bearer(key)).json()
    assert until["variants"][0]["exposures"] == 1


def test_refusals(client: TestClient, settings: Settings) -> None:
    key = make_key(settings, "reports:read")
    assert client.get(REPORT).status_code == 401
    wrong = client.get(REPORT, headers=bearer(make_key(settings, "render")))
    assert wrong.status_code == 403
    bad = client.get(REPORT, params={"since": "last week"}, headers=bearer(key))
    assert bad.status_code == 400 and "since" in bad.json()["error"] and "ISO 8601" in bad.json()["error"]
    unknown = client.get("/api/campaigns/nope/report", headers=bearer(key))
    assert unknown.status_code == 404 and unknown.json() == {"error": "unknown campaign 'nope'"}
    empty = client.get(REPORT, headers=bearer(key)).json()
    assert (empty["opens"], empty["variants"]) == ([], [])


def test_shutdown_flushes_what_is_buffered(settings: Settings) -> None:
    app = create_app(settings.replace(exposure_flush_seconds=3600.0))  # no periodic flush in this test
    with TestClient(app, base_url=BASE_URL) as client:
        record(client, [seen("a", "open")] * 3 + [seen("a", "click")])
    rows = asyncio.run(stored(settings.database_url))
    assert sorted((r.event, r.recorded) for r in rows) == [("click", 1), ("open", 3)]


async def stored(url: str) -> list[ExposureCount]:
    store = open_store(url)
    await store.open()
    try:
        return await store.exposures.read("demo", None, None)
    finally:
        await store.close()
