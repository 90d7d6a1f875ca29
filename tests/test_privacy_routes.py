"""DELETE /api/customers/{id} and GET /api/customers/{id}/export through the app (real SQLite file):
what the caller and the recipient's next open see, the scopes, bad ids, and what the logs say."""

from __future__ import annotations

import logging
import time
from typing import Any

import orjson
import pytest
from starlette.testclient import TestClient

from app.app import create_app
from app.config import Settings
from app.demo import recipient_id
from app.security.tokens import TokenSigner
from app.security.webhook_auth import sign_header
from tests.conftest import BASE_URL, SENDER
from tests.test_routes_api import make_key
from tests.upstream_stub import running_stub

SECRET = "whsec-privacy-0123456789abcdef"


@pytest.fixture
def app_settings(settings: Settings) -> Settings:
    return settings.replace(webhook_secrets=(SECRET,))


@pytest.fixture
def client(app_settings: Settings) -> Any:
    with TestClient(create_app(app_settings), base_url=BASE_URL) as test_client:
        yield test_client


def bearer(key: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}


def post_event(client: TestClient, event_id: str, recipient: str, **payload: object) -> None:
    body = orjson.dumps(
        {
            "id": event_id,
            "type": "profile.updated",
            "recipient": recipient,
            "occurred_at": "2024-05-01T10:00:00Z",
            "payload": payload,
        }
    )
    headers = {
        "content-type": "application/json",
        "opentime-signature": sign_header([SECRET], int(time.time()), body),
    }
    response = client.post("/webhooks/events", content=body, headers=headers)
    assert response.status_code == 200, response.text


def picks(client: TestClient, signer: TokenSigner, recipient: str) -> tuple[list[str], str | None]:
    token = signer.sign("demo", recipient, now=int(time.time()))
    response = client.get(f"/v1/{token}/list/picks.json", headers={"AMP-Email-Sender": SENDER})
    assert response.status_code == 200
    return [item["name"] for item in response.json()["items"]], response.headers.get("x-opentime-fallback")


def test_erasure_removes_the_data_and_every_cached_answer(
    client: TestClient, app_settings: Settings, signer: TokenSigner
) -> None:
    who = recipient_id(3)
    erase_key, export_key = (
        make_key(app_settings, "customers:erase"),
        make_key(app_settings, "customers:export"),
    )
    post_event(client, "ev-1", who, first_name="Grace")
    items, fallback = picks(client, signer, who)
    assert len(items) == 4 and fallback is None  # personal, and now cached

    response = client.delete(f"/api/customers/{who}", headers=bearer(erase_key))
    assert response.status_code == 200
    assert response.headers["cache-control"] == "no-store"
    body = response.json()
    assert body["erased"] is True and body["removed"] == {"profiles": 1, "events": 1, "form_answers": 0}
    assert body["erased_at"].endswith("Z") and len(body["erasure_id"]) == 16
    assert who not in response.text

    # The next open no longer knows the recipient: the cached personal list is gone.
    assert picks(client, signer, who)[1] == "unknown-recipient"
    read_key = make_key(app_settings, "personalization:read")
    assert client.get(f"/api/customers/{who}/personalization", headers=bearer(read_key)).status_code == 404

    exported = client.get(f"/api/customers/{who}/export", headers=bearer(export_key)).json()
    assert (exported["profile"], exported["events"], exported["form_answers"]) == (None, [], [])
    assert exported["erasures"] == [
        {"erasure_id": body["erasure_id"], "erased_at": body["erased_at"], **body["removed"]}
    ]

    # Again: nothing left, still 200, and recorded a second time.
    again = client.delete(f"/api/customers/{who}", headers=bearer(erase_key)).json()
    assert again["removed"] == {"profiles": 0, "events": 0, "form_answers": 0}
    assert again["erasure_id"] != body["erasure_id"]
    metrics = client.get("/metrics").text
    assert "opentime_erasures_total 2.0" in metrics

    # Events sent later are new data.
    post_event(client, "ev-2", who, first_name="Back")
    assert client.get(f"/api/customers/{who}/export", headers=bearer(export_key)).json()["profile"][
        "attributes"
    ] == {"first_name": "Back"}


def test_export_returns_everything_stored_not_to_be_cached(
    client: TestClient, app_settings: Settings, signer: TokenSigner
) -> None:
    who = recipient_id(5)
    post_event(client, "ev-a", who, first_name="Ada", points=12)
    response = client.get(
        f"/api/customers/{who}/export", headers=bearer(make_key(app_settings, "customers:export"))
    )
    assert response.status_code == 200
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["content-type"] == "application/json"
    data = response.json()
    assert data["customer"] == who and data["exported_at"].endswith("Z")
    profile = data["profile"]
    assert profile["attributes"]["first_name"] == "Ada" and profile["attributes"]["points"] == 12
    assert len(profile["attributes"]["recommendations"]) == 4  # the imported attributes too
    assert set(profile["field_times"]) == {"first_name", "points"}
    assert profile["version"] == 2
    [event] = data["events"]
    assert (event["id"], event["type"]) == ("ev-a", "profile.updated")
    assert event["occurred_at"].startswith("2024-05-01T10:00:00") and event["received_at"].endswith("Z")
    assert data["form_answers"] == [] and data["erasures"] == []


def test_an_unknown_customer_exports_empty(client: TestClient, app_settings: Settings) -> None:
    data = client.get("/api/customers/ghost/export", headers=bearer(make_key(app_settings, "admin"))).json()
    assert (data["customer"], data["profile"], data["events"], data["form_answers"]) == (
        "ghost",
        None,
        [],
        [],
    )


def test_each_request_needs_its_own_scope(client: TestClient, app_settings: Settings) -> None:
    who = recipient_id(1)
    erase_key, export_key = (
        make_key(app_settings, "customers:erase"),
        make_key(app_settings, "customers:export"),
    )
    assert client.delete(f"/api/customers/{who}").status_code == 401
    assert client.get(f"/api/customers/{who}/export").status_code == 401
    # A key that reads personalization, or renders, must not erase or export.
    for scope in ("personalization:read", "render"):
        key = make_key(app_settings, scope)
        assert client.delete(f"/api/customers/{who}", headers=bearer(key)).status_code == 403
        assert client.get(f"/api/customers/{who}/export", headers=bearer(key)).status_code == 403
    assert client.get(f"/api/customers/{who}/export", headers=bearer(erase_key)).status_code == 403
    assert client.delete(f"/api/customers/{who}", headers=bearer(export_key)).status_code == 403
    assert (
        client.get(f"/api/customers/{who}/export", headers=bearer(export_key)).json()["profile"] is not None
    )
    admin = make_key(app_settings, "admin")
    assert client.delete(f"/api/customers/{who}", headers=bearer(admin)).json()["removed"]["profiles"] == 1


@pytest.mark.parametrize("bad", ["x" * 201, "a%01b"])
def test_an_id_no_store_could_hold_is_a_400(client: TestClient, app_settings: Settings, bad: str) -> None:
    key = make_key(app_settings, "admin")
    for response in (
        client.delete(f"/api/customers/{bad}", headers=bearer(key)),
        client.get(f"/api/customers/{bad}/export", headers=bearer(key)),
    ):
        assert response.status_code == 400
        assert "recipient id" in response.json()["error"]


def test_logs_name_the_record_not_the_recipient(
    client: TestClient, app_settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    who = recipient_id(7)
    with caplog.at_level(logging.DEBUG):
        body = client.delete(f"/api/customers/{who}", headers=bearer(make_key(app_settings, "admin"))).json()
    # The app's own loggers (the test client logs the URL it requested).
    lines = [record.getMessage() for record in caplog.records if record.name.startswith("app")]
    assert any(body["erasure_id"] in line and "1 profile(s)" in line for line in lines)
    assert not any(who in line for line in lines)


def test_erasure_drops_the_upstream_copy_of_a_recipient_known_only_upstream(
    app_settings: Settings, signer: TokenSigner
) -> None:
    # Opentime does not own the upstream's data (the sender erases it there); it must not keep
    # serving its own cached copy once asked to erase the recipient.
    with running_stub() as stub:
        stub.profiles["crm-1"] = {"first_name": "Lin"}
        configured = app_settings.replace(upstream_url=f"{stub.url}/profiles/{{recipient}}")
        key = make_key(configured, "admin")
        with TestClient(create_app(configured), base_url=BASE_URL) as client:
            token = signer.sign("demo", "crm-1", now=int(time.time()))

            def hello() -> Any:
                response = client.get(f"/v1/{token}/list/hello.json", headers={"AMP-Email-Sender": SENDER})
                return response.json()["items"][0]["first_name"]

            assert hello() == "Lin"
            stub.profiles["crm-1"] = {"first_name": "Max"}
            assert hello() == "Lin"  # cached (upstream_fresh_ttl_seconds)
            body = client.delete("/api/customers/crm-1", headers=bearer(key)).json()
            assert body["removed"] == {"profiles": 0, "events": 0, "form_answers": 0}
            assert hello() == "Max"  # asked again
