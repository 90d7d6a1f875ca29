"""GET /metrics (Prometheus text) and the per-response data age of the open-time path."""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime

import orjson
import pytest
from starlette.testclient import TestClient

from app.app import create_app
from app.config import Settings
from app.demo import recipient_id
from app.metrics import AGE_BUCKETS, AgeHistogram, OpenStats
from app.security.tokens import TokenSigner
from app.security.webhook_auth import sign_header
from tests.conftest import BASE_URL, SENDER

AMP = {"AMP-Email-Sender": SENDER}


def test_age_histogram_buckets_are_cumulative() -> None:
    histogram = AgeHistogram()
    for age in (0.2, 1.0, 4.0, 10 * 86400.0):
        histogram.observe(age)
    buckets = dict(histogram.buckets())
    assert (buckets["1.0"], buckets["5.0"], buckets[str(AGE_BUCKETS[-1])], buckets["+Inf"]) == (2, 3, 3, 4)
    assert histogram.sum == pytest.approx(0.2 + 1.0 + 4.0 + 864000.0)


def test_open_stats_count_outcomes_and_ages() -> None:
    stats = OpenStats()
    stats.served("list", None, 3.0, 0.0004)
    stats.served("list", "budget-exceeded", None, 0.151)
    stats.served("image", "budget-exceeded", None, 0.3)
    assert stats.outcomes == {
        ("list", None): 1,
        ("list", "budget-exceeded"): 1,
        ("image", "budget-exceeded"): 1,
    }
    assert sum(stats.data_age["list"].counts) == 1 and "image" not in stats.data_age
    durations = dict(stats.duration["list"].buckets())
    assert (durations["0.001"], durations["0.15"], durations["0.2"], durations["+Inf"]) == (1, 1, 2, 2)
    assert stats.duration["image"].sum == pytest.approx(0.3)


def test_open_durations_and_the_largest_budget_are_exported(client: TestClient, signer: TokenSigner) -> None:
    token = signer.sign("demo", recipient_id(5), now=int(time.time()))
    for _ in range(3):
        assert client.get(f"/v1/{token}/list/picks.json", headers=AMP).status_code == 200
    text = client.get("/metrics").text
    assert 'opentime_open_duration_seconds_count{kind="list"} 3.0' in text
    assert 'opentime_open_duration_seconds_bucket{kind="list",le="10.0"} 3.0' in text
    total = re.search(r'opentime_open_duration_seconds_sum\{kind="list"\} (\S+)', text)
    assert total is not None and 0 < float(total[1]) < 3 * 10.0
    # The demo's slowest block allows 500 ms (amp_templates/demo/blocks.toml); the default is 150 ms.
    assert "opentime_open_budget_seconds 0.5" in text


def test_committed_events_and_their_delay_are_exported(settings: Settings) -> None:
    secret = "whsec-metrics-0123456789abcdef"
    with TestClient(create_app(settings.replace(webhook_secrets=(secret,))), base_url=BASE_URL) as client:
        text = client.get("/metrics").text
        assert 'opentime_events_committed_total{status="applied"} 0.0' in text
        assert "opentime_events_queued 0.0" in text and "opentime_events_oldest_queued_seconds 0.0" in text
        ten_minutes_ago = datetime.fromtimestamp(time.time() - 600, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        event = {"type": "profile.updated", "recipient": recipient_id(2), "occurred_at": ten_minutes_ago}
        events = [{**event, "id": f"m{i}", "payload": {"n": i}} for i in range(2)]
        body = orjson.dumps(events)
        headers = {"content-type": "application/json"}
        for attempt in range(2):  # the second time (signed anew, or it is a replay): duplicates
            stamp = int(time.time()) - attempt
            signed = {**headers, "opentime-signature": sign_header([secret], stamp, body)}
            assert client.post("/webhooks/events", content=body, headers=signed).status_code == 200
        text = client.get("/metrics").text
    assert 'opentime_events_committed_total{status="applied"} 2.0' in text
    assert 'opentime_events_committed_total{status="duplicate"} 2.0' in text
    assert "opentime_events_failed_total 0.0" in text
    # Ten minutes late: past the 300 s bucket, within the 900 s one.
    assert 'opentime_event_delay_seconds_bucket{le="300.0"} 0.0' in text
    assert 'opentime_event_delay_seconds_bucket{le="900.0"} 2.0' in text


def test_every_kind_is_counted_with_its_fallbacks(client: TestClient, signer: TokenSigner) -> None:
    # Before the one pipeline, only amp-list answers reached opentime_open_responses_total.
    token = signer.sign("demo", recipient_id(4), now=int(time.time()))
    client.get(f"/v1/{token}/html/picks")
    client.get(f"/v1/{token}/view")
    client.get(f"/v1/{token}/img/banner.png")
    client.get(f"/v1/{token}/img/countdown.gif")
    client.get("/v1/not-a-token/img/banner.png")
    client.get("/v1/not-a-token/html/picks")
    client.post("/v1/not-a-token/form/feedback", headers=AMP, data={"a": "b"})
    text = client.get("/metrics").text
    for kind in ("fragment", "view", "image", "countdown"):
        assert f'opentime_open_responses_total{{kind="{kind}",outcome="ok"}} 1.0' in text, kind
    for kind in ("image", "fragment", "form"):
        assert re.search(
            rf'opentime_open_responses_total\{{kind="{kind}",outcome="token-[a-z-]+"\}} 1\.0', text
        )


def test_metrics_after_some_opens(client: TestClient, signer: TokenSigner) -> None:
    token = signer.sign("demo", recipient_id(3), now=int(time.time()))
    for _ in range(2):
        response = client.get(f"/v1/{token}/list/picks.json", headers=AMP)
        assert int(response.headers["x-opentime-data-age"]) >= 0  # cache hits carry it too
    client.get("/v1/not-a-token/list/picks.json", headers=AMP)
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["content-type"].startswith("text/plain")
    text = response.text
    assert 'opentime_open_responses_total{kind="list",outcome="ok"} 2.0' in text
    assert 'opentime_data_age_seconds_count{kind="list"} 2.0' in text
    assert 'opentime_cache_hits_total{cache="lists"} 1.0' in text
    assert "opentime_events_rejected_total 0.0" in text  # webhook requests refused: queue full
    assert 'opentime_cache_entries{cache="lists"} 1.0' in text
    assert "opentime_store_read_keys_total 1.0" in text  # one profile read: the second open was a hit
    assert "opentime_store_read_batches_total 1.0" in text
    assert "opentime_image_renders_total 0.0" in text
    assert 'opentime_image_fetches_total{fetch_class="' in text
    assert "opentime_upstream_breaker_state" not in text  # no upstream configured
    fallbacks = re.findall(r'opentime_open_responses_total\{kind="list",outcome="([a-z-]+)"\} 1\.0', text)
    assert fallbacks and "ok" not in fallbacks  # the bad token, counted by its reason


def test_metrics_token_is_required_when_set(settings: Settings) -> None:
    configured = settings.replace(metrics_token="m3trics-t0ken-for-tests")
    with TestClient(create_app(configured), base_url=BASE_URL) as client:
        assert client.get("/metrics").status_code == 401
        assert client.get("/metrics", headers={"authorization": "Bearer wrong"}).status_code == 401
        ok = client.get("/metrics", headers={"authorization": "Bearer m3trics-t0ken-for-tests"})
        assert ok.status_code == 200 and "opentime_open_responses_total" in ok.text
