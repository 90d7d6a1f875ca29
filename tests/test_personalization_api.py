"""GET /api/customers/{id}/personalization: auth, payload per campaign and block, data age, upstream."""

from __future__ import annotations

import pytest
from starlette.testclient import TestClient

from app.app import create_app
from app.config import Settings
from app.demo import recipient_id
from tests.conftest import BASE_URL
from tests.test_routes_api import make_key
from tests.upstream_stub import running_stub


@pytest.fixture
def read_key(settings: Settings) -> str:
    return make_key(settings, "personalization:read")


def get(client: TestClient, key: str | None, customer: str, query: str = "") -> tuple[int, dict[str, object]]:
    headers = {"authorization": f"Bearer {key}"} if key else {}
    response = client.get(f"/api/customers/{customer}/personalization{query}", headers=headers)
    assert response.headers["content-type"] == "application/json"
    if response.status_code in (200, 503):
        assert response.headers["cache-control"] == "no-store"
    return response.status_code, response.json()


def test_payload_per_campaign_and_block_with_version_and_age(client: TestClient, read_key: str) -> None:
    status, data = get(client, read_key, recipient_id(1))
    assert status == 200
    assert (data["customer"], data["source"], data["version"]) == (recipient_id(1), "store", 1)
    age = data["data_age_seconds"]
    assert isinstance(age, float) and 0 <= age < 120
    assert isinstance(data["updated_at"], str) and data["updated_at"].endswith("Z")
    campaigns = data["campaigns"]
    assert isinstance(campaigns, dict) and "demo" in campaigns
    picks = campaigns["demo"]["blocks"]["picks"]
    assert picks["live"] is True and len(picks["items"]) == 4
    assert campaigns["demo"]["blocks"]["hello"]["items"][0]["first_name"]


def test_one_campaign_with_the_query_parameter(client: TestClient, read_key: str) -> None:
    status, data = get(client, read_key, recipient_id(2), "?campaign=demo")
    assert status == 200 and list(data["campaigns"]) == ["demo"]  # type: ignore[call-overload]
    status, data = get(client, read_key, recipient_id(2), "?campaign=nope")
    assert status == 404 and "nope" in str(data["error"])


def test_unknown_customer_is_404(client: TestClient, read_key: str) -> None:
    status, data = get(client, read_key, "ghost")
    assert status == 404 and data == {"error": "unknown customer 'ghost'"}


def test_missing_bad_and_wrong_scope_keys(client: TestClient, settings: Settings) -> None:
    assert get(client, None, recipient_id(1))[0] == 401
    assert get(client, "otk_nonsense", recipient_id(1))[0] == 401
    # A key for send-time rendering must not read customer data.
    assert get(client, make_key(settings, "render"), recipient_id(1))[0] == 403
    assert get(client, make_key(settings, "admin"), recipient_id(1))[0] == 200


def test_customer_known_only_upstream(settings: Settings, read_key: str) -> None:
    with running_stub() as stub:
        stub.profiles["crm-7"] = {"first_name": "Lin"}
        configured = settings.replace(upstream_url=f"{stub.url}/profiles/{{recipient}}")
        with TestClient(create_app(configured), base_url=BASE_URL) as client:
            status, data = get(client, read_key, "crm-7", "?campaign=demo")
            assert status == 200
            assert (data["source"], data["version"]) == ("upstream", None)
            blocks = data["campaigns"]["demo"]["blocks"]  # type: ignore[index]
            assert blocks["hello"] == {"items": [{"first_name": "Lin"}], "live": True}
            assert blocks["picks"]["live"] is False  # no recommendations upstream: the static items
            assert get(client, read_key, "crm-8")[0] == 404
            stub.mode = "unavailable"
            status, data = get(client, read_key, "crm-9")
            assert status == 503 and data["reason"] == "upstream-unavailable"


@pytest.mark.parametrize("customer", ["x" * 201, "a%00b", "a%C2%85", "%C3%A9" * 101])
def test_an_id_no_token_can_carry_is_a_400_without_any_lookup(
    settings: Settings, read_key: str, customer: str
) -> None:
    # Was a store read and an upstream request (404 or 503) for ids of any length or with control
    # characters: found by the OpenAPI contract, which documents the customer as a recipient id.
    with running_stub() as stub:
        configured = settings.replace(upstream_url=f"{stub.url}/profiles/{{recipient}}")
        with TestClient(create_app(configured), base_url=BASE_URL) as client:
            status, data = get(client, read_key, customer)
            assert status == 400 and str(data["error"]).startswith("customer: recipient id")
            assert get(client, read_key, "x" * 200)[0] == 404  # the longest id is still looked up
        assert stub.total_requests == 1
