"""X-Opentime-Data-Age on amp-list responses: the age of the profile data used, on cold opens and hits."""

from __future__ import annotations

import time

from starlette.testclient import TestClient

from app.app import create_app
from app.config import Settings
from app.demo import recipient_id
from app.security.tokens import TokenSigner
from tests.conftest import BASE_URL, SENDER

AMP = {"AMP-Email-Sender": SENDER}
LATER = 3600.0  # the app's clock runs an hour ahead of when the profiles were loaded


def test_data_age_is_reported_on_cold_opens_and_cache_hits(settings: Settings, signer: TokenSigner) -> None:
    app = create_app(settings, clock=lambda: time.time() + LATER)
    token = signer.sign("demo", recipient_id(4), now=int(time.time()))
    with TestClient(app, base_url=BASE_URL) as client:
        ages = [int(client.get(f"/v1/{token}/list/picks.json", headers=AMP).headers["x-opentime-data-age"])]
        ages.append(
            int(client.get(f"/v1/{token}/list/picks.json", headers=AMP).headers["x-opentime-data-age"])
        )
        metrics = client.get("/metrics").text
    assert all(LATER - 60 <= age <= LATER + 60 for age in ages)
    assert 'opentime_data_age_seconds_bucket{kind="list",le="900.0"} 0.0' in metrics
    assert 'opentime_data_age_seconds_bucket{kind="list",le="21600.0"} 2.0' in metrics


def test_fallbacks_carry_no_data_age(client: TestClient, signer: TokenSigner) -> None:
    token = signer.sign("demo", "nobody", now=int(time.time()))
    response = client.get(f"/v1/{token}/list/picks.json", headers=AMP)
    assert response.headers["x-opentime-fallback"] == "unknown-recipient"
    assert "x-opentime-data-age" not in response.headers
