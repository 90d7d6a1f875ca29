"""``POST /webhooks/events`` through the full app (lifespan, real SQLite file)."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from starlette.testclient import TestClient

from app.app import create_app
from app.config import Settings
from app.demo import recipient_id
from app.security.tokens import TokenSigner
from app.security.webhook_auth import sign_header
from tests.conftest import BASE_URL, SENDER, load_rows

SECRET = "whsec-test-0123456789abcdef"
OLD_SECRET = "whsec-old-0123456789abcdef"
URL = "/webhooks/events"


def event(event_id: str, **changes: Any) -> dict[str, Any]:
    return {
        "id": event_id,
        "type": "profile.updated",
        "recipient": recipient_id(1),
        "occurred_at": "2024-05-01T10:00:00Z",
        "payload": {"first_name": "Zoe"},
        **changes,
    }


def post(
    client: TestClient,
    data: Any,
    *,
    secret: str = SECRET,
    timestamp: int | None = None,
    headers: dict[str, str] | None = None,
    body: bytes | None = None,
) -> Any:
    raw = orjson.dumps(data) if body is None else body
    stamp = int(time.time()) if timestamp is None else timestamp
    sent = {"content-type": "application/json", "opentime-signature": sign_header([secret], stamp, raw)}
    return client.post(URL, content=raw, headers={**sent, **(headers or {})})


@pytest.fixture
def hook_settings(settings: Settings) -> Settings:
    return settings.replace(webhook_secrets=(SECRET, OLD_SECRET), webhook_max_body_bytes=64 * 1024)


@pytest.fixture
def hooks(hook_settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(hook_settings), base_url=BASE_URL) as test_client:
        yield test_client


def stored_event_ids(settings: Settings) -> set[str]:
    conn = sqlite3.connect(settings.database_url.removeprefix("sqlite:///"))
    try:
        return {row[0] for row in conn.execute("SELECT id FROM events")}
    finally:
        conn.close()


def picks(client: TestClient, signer: TokenSigner, recipient: str) -> list[dict[str, Any]]:
    token = signer.sign("demo", recipient, now=int(time.time()))
    response = client.get(f"/v1/{token}/list/picks.json", headers={"AMP-Email-Sender": SENDER})
    assert response.status_code == 200
    items: list[dict[str, Any]] = response.json()["items"]
    return items


# -- authentication --------------------------------------------------------------------------------


def test_signed_event_is_applied(hooks: TestClient, hook_settings: Settings) -> None:
    response = post(hooks, event("e1"))
    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "no-store"
    assert response.json() == {
        "applied": 1,
        "duplicates": 0,
        "rejected": 0,
        "results": [{"index": 0, "id": "e1", "status": "applied"}],
        "errors": [],
    }
    assert stored_event_ids(hook_settings) == {"e1"}


def test_any_configured_secret_is_accepted_for_rotation(hooks: TestClient) -> None:
    assert post(hooks, event("e1"), secret=OLD_SECRET).status_code == 200
    # A sender mid-rotation sends one v1 per secret; one unknown secret among them is fine.
    raw = orjson.dumps(event("e2"))
    header = sign_header(["whsec-retired-0123456789ab", SECRET], int(time.time()), raw)
    response = hooks.post(
        URL, content=raw, headers={"content-type": "application/json", "opentime-signature": header}
    )
    assert response.status_code == 200


@pytest.mark.parametrize(
    ("headers", "reason"),
    [
        ({"opentime-signature": ""}, "missing-signature"),
        ({"opentime-signature": "v1=abc"}, "malformed-signature"),
        ({"opentime-signature": "t=abc,v1=00"}, "malformed-signature"),
        # {now}: filled in when the test runs (a time taken at collection goes stale in a long suite).
        ({"opentime-signature": "t={now},v1=" + "0" * 64}, "bad-signature"),
    ],
)
def test_missing_or_malformed_signature_is_401(
    hooks: TestClient, headers: dict[str, str], reason: str
) -> None:
    now = str(int(time.time()))
    headers = {name: value.replace("{now}", now) for name, value in headers.items()}
    response = post(hooks, event("e1"), headers=headers)
    assert response.status_code == 401
    assert response.json()["reason"] == reason


def test_wrong_secret_is_401_and_nothing_is_stored(hooks: TestClient, hook_settings: Settings) -> None:
    response = post(hooks, event("e1"), secret="whsec-attacker-0123456789")
    assert response.status_code == 401
    assert response.json()["reason"] == "bad-signature"
    assert stored_event_ids(hook_settings) == set()


def test_tampered_body_is_401(hooks: TestClient) -> None:
    # Attack: take a genuine signed request and change the payload, keeping the signature.
    raw = orjson.dumps(event("e1"))
    header = sign_header([SECRET], int(time.time()), raw)
    tampered = raw.replace(b"Zoe", b"Eve")
    response = hooks.post(
        URL, content=tampered, headers={"content-type": "application/json", "opentime-signature": header}
    )
    assert response.status_code == 401


@pytest.mark.parametrize("offset", [-301, 301])
def test_timestamp_outside_tolerance_is_401(hooks: TestClient, offset: int) -> None:
    response = post(hooks, event("e1"), timestamp=int(time.time()) + offset)
    assert response.status_code == 401
    assert response.json()["reason"] == "timestamp-outside-tolerance"


def test_replayed_request_is_401(hooks: TestClient) -> None:
    # Attack: capture a signed request and send it again inside the tolerance window.
    raw = orjson.dumps(event("e1", payload={"first_name": "Mallory"}))
    headers = {
        "content-type": "application/json",
        "opentime-signature": sign_header([SECRET], int(time.time()), raw),
    }
    assert hooks.post(URL, content=raw, headers=headers).status_code == 200
    replay = hooks.post(URL, content=raw, headers=headers)
    assert replay.status_code == 401
    assert replay.json()["reason"] == "replayed"


def test_webhooks_disabled_without_secrets(client: TestClient) -> None:
    response = post(client, event("e1"))
    assert response.status_code == 503
    assert "webhook_secrets" in response.json()["error"]


# -- body --------------------------------------------------------------------------------------------


def test_wrong_content_type_is_415(hooks: TestClient) -> None:
    assert post(hooks, event("e1"), headers={"content-type": "text/plain"}).status_code == 415


def test_body_over_the_limit_is_413(hooks: TestClient) -> None:
    big = [event(f"e{i}", payload={"note": "x" * 1000}) for i in range(100)]
    response = post(hooks, big)
    assert response.status_code == 413
    assert "body larger" in response.json()["error"]


def test_chunked_body_over_the_limit_is_413(hooks: TestClient) -> None:
    def chunks() -> Iterator[bytes]:
        for _ in range(100):
            yield b" " * 1024

    # A well-formed, fresh header: only then is the body read (and its size counted).
    signature = sign_header([SECRET], int(time.time()), b"not this body")
    headers = {"content-type": "application/json", "opentime-signature": signature}
    assert hooks.post(URL, content=chunks(), headers=headers).status_code == 413


@pytest.mark.parametrize(
    ("body", "error"), [(b"{nope", "not valid JSON"), (b"[]", "non-empty"), (b"7", "event object")]
)
def test_unusable_body_is_400(hooks: TestClient, body: bytes, error: str) -> None:
    response = post(hooks, None, body=body)
    assert response.status_code == 400
    assert error in response.json()["error"]


# -- batches -------------------------------------------------------------------------------------------


def test_batch_applies_good_events_and_reports_bad_ones(hooks: TestClient, hook_settings: Settings) -> None:
    batch = [
        event("good-1"),
        event("bad-time", occurred_at="yesterday"),
        event("good-2", type="cart.cleared", payload={}),
        event("bad-type", type="teleport"),
        {
            "id": "bad-price",
            "type": "purchase",
            "recipient": "r",
            "occurred_at": "2024-05-01T10:00:00Z",
            "payload": {"total": 5, "items": [{"sku": "a", "price": -1}]},
        },
    ]
    response = post(hooks, batch)
    assert response.status_code == 207
    body = response.json()
    assert body["applied"] == 2
    assert body["rejected"] == 3
    assert [(r["index"], r["status"]) for r in body["results"]] == [
        (0, "applied"),
        (1, "rejected"),
        (2, "applied"),
        (3, "rejected"),
        (4, "rejected"),
    ]
    assert [(e["index"], e["field"], e["id"]) for e in body["errors"]] == [
        (1, "occurred_at", "bad-time"),
        (3, "type", "bad-type"),
        (4, "payload.items[0].price", "bad-price"),
    ]
    assert stored_event_ids(hook_settings) == {"good-1", "good-2"}


def test_poison_numbers_times_and_field_counts_are_rejected_per_event(
    hooks: TestClient, hook_settings: Settings
) -> None:
    # Attacks: an integer past 64 bits (later failing every shared commit: 503 forever), a time before
    # year 1 in UTC (a 500), and thousands of fields in one event (the writer held for seconds).
    batch = [
        event("good-1"),
        event("too-big", payload={"totals": {"orders": 18446744073709551615}}),
        event("year-0", occurred_at="0001-01-01T00:00:00+01:00"),
        event("too-many", payload={f"k{i}": 1 for i in range(1001)}),
        event("good-2", type="purchase", payload={"total": 1}),
    ]
    response = post(hooks, batch)
    assert response.status_code == 207, response.text
    body = response.json()
    assert (body["applied"], body["rejected"]) == (2, 3)
    assert [(e["index"], e["field"]) for e in body["errors"]] == [
        (1, "payload.totals.orders"),
        (2, "occurred_at"),
        (3, "payload"),
    ]
    assert "1001 fields" in body["errors"][2]["error"]
    assert stored_event_ids(hook_settings) == {"good-1", "good-2"}


def test_non_hex_signature_is_401_not_500(hooks: TestClient) -> None:
    # Attack: v1=\xe9 made hmac.compare_digest raise TypeError, a 500 for any unauthenticated client.
    raw = orjson.dumps(event("e1"))
    header = f"t={int(time.time())},v1=\xe9".encode("latin-1")
    response = hooks.post(
        URL, content=raw, headers={"content-type": "application/json", "opentime-signature": header}
    )
    assert response.status_code == 401
    assert response.json()["reason"] == "malformed-signature"


def test_batch_without_any_valid_event_is_400(hooks: TestClient, hook_settings: Settings) -> None:
    response = post(hooks, [event("a", recipient=""), {"id": "b"}])
    assert response.status_code == 400
    assert [(e["index"], e["field"]) for e in response.json()["errors"]] == [(0, "recipient"), (1, "type")]
    assert stored_event_ids(hook_settings) == set()


def test_duplicate_ids_are_no_ops(hooks: TestClient, signer: TokenSigner) -> None:
    first = post(hooks, event("dup", type="cart.updated", payload={"items": [{"sku": "a", "name": "First"}]}))
    assert first.json()["applied"] == 1
    again = event("dup", type="cart.updated", payload={"items": [{"sku": "b", "name": "Second"}]})
    response = post(hooks, [again, event("dup")])
    assert response.status_code == 200
    assert [r["status"] for r in response.json()["results"]] == ["duplicate", "duplicate"]
    assert response.json()["duplicates"] == 2


def test_older_event_does_not_overwrite_a_newer_field(hooks: TestClient, signer: TokenSigner) -> None:
    newer = {"recommendations": [{"name": "Newer", "price": 2, "sku": "n", "image": "n.jpg"}]}
    older = {"recommendations": [{"name": "Older", "price": 1, "sku": "o", "image": "o.jpg"}]}
    post(hooks, event("new", payload=newer, occurred_at="2024-05-02T00:00:00Z"))
    response = post(hooks, event("old", payload=older, occurred_at="2024-05-01T00:00:00+02:00"))
    assert response.json()["results"][0]["status"] == "applied"  # recorded, but it loses the field
    assert [i["name"] for i in picks(hooks, signer, recipient_id(1))] == ["Newer"]


# -- invalidation ------------------------------------------------------------------------------------


def test_event_changes_the_next_open(hooks: TestClient, signer: TokenSigner) -> None:
    recipient = recipient_id(3)
    before = picks(hooks, signer, recipient)  # now cached for 300 s
    assert len(before) == 4
    fresh = [{"name": "Just for you", "price": 9.5, "sku": "sku-new", "image": "new.jpg"}]
    response = post(hooks, event("fresh", recipient=recipient, payload={"recommendations": fresh}))
    assert response.status_code == 200
    assert [i["name"] for i in picks(hooks, signer, recipient)] == ["Just for you"]


def test_event_creates_an_unknown_recipient(hooks: TestClient, signer: TokenSigner) -> None:
    fresh = [{"name": "Welcome pick", "price": 1, "sku": "w", "image": "w.jpg"}]
    assert picks(hooks, signer, "new-person")[0]["name"] == "Bestsellers of the week"  # fallback
    post(hooks, event("hello", recipient="new-person", payload={"recommendations": fresh}))
    assert [i["name"] for i in picks(hooks, signer, "new-person")] == ["Welcome pick"]


# -- settings ------------------------------------------------------------------------------------------


def test_webhook_settings_parse_strictly_and_mask_secrets(keys_file: Any) -> None:
    from app.config import FIELDS_BY_NAME, load_settings, masked
    from app.errors import ConfigError

    env = {"OPENTIME_PUBLIC_BASE_URL": BASE_URL, "OPENTIME_KEYS_FILE": str(keys_file)}
    env["OPENTIME_ALLOWED_SENDERS"] = SENDER
    loaded = load_settings({**env, "OPENTIME_WEBHOOK_SECRETS": f"{SECRET}, {OLD_SECRET}"}).settings
    assert loaded.webhook_secrets == (SECRET, OLD_SECRET)
    assert masked(FIELDS_BY_NAME["webhook_secrets"], loaded.webhook_secrets) == "<2 secret(s)>"
    assert load_settings({**env, "OPENTIME_WEBHOOK_SECRETS": ""}).settings.webhook_secrets == ()
    assert load_settings(env).settings.webhook_tolerance_seconds == 300
    with pytest.raises(ConfigError, match="at least 16"):
        load_settings({**env, "OPENTIME_WEBHOOK_SECRETS": "short"})


# -- invalidation ----------------------------------------------------------------------------------


def test_committed_events_reach_the_invalidation_listeners(hooks: TestClient) -> None:
    seen: list[frozenset[str]] = []
    hooks.app_state["services"].invalidation.subscribe(seen.append)
    assert post(hooks, [event("inv-1"), event("inv-2", recipient=recipient_id(2))]).status_code == 200
    assert seen == [frozenset({recipient_id(1), recipient_id(2)})]
    assert post(hooks, event("inv-1")).status_code == 200  # a duplicate changes nothing
    assert len(seen) == 1


# -- nesting and numbers (issue 13, finding 3) -----------------------------------------------------


def deep_event_text(event_id: str, depth: int, kind: str) -> bytes:
    value = b"[" * depth + b"1" + b"]" * depth if kind == "list" else b'{"k": ' * depth + b"1" + b"}" * depth
    return (
        b'{"id": "'
        + event_id.encode()
        + b'", "type": "profile.updated", "recipient": "'
        + recipient_id(1).encode()
        + b'", "occurred_at": "2024-05-01T10:00:00Z", "payload": {"deep": '
        + value
        + b"}}"
    )


@pytest.mark.parametrize(("depth", "kind"), [(1000, "list"), (1000, "object"), (253, "list")])
def test_a_deeply_nested_event_fails_alone(
    hooks: TestClient, hook_settings: Settings, depth: int, kind: str
) -> None:
    # Attack: a signed event nested ~1,000 deep overflowed a recursive check (a 500 that failed the
    # whole batch of 1,000); a list 253 deep was stored and then broke every later event of the
    # recipient (orjson cannot encode more than 254 levels).
    deep = deep_event_text("deep", depth, kind)
    good = [orjson.dumps(event(f"good-{i}", recipient=recipient_id(2 + i % 5))) for i in range(99)]
    body = b"[" + b",".join([*good[:50], deep, *good[50:]]) + b"]"
    response = post(hooks, None, body=body)
    assert response.status_code == 207, response.text
    reply = response.json()
    assert (reply["applied"], reply["rejected"]) == (99, 1)
    [error] = reply["errors"]
    assert error["index"] == 50 and error["id"] == "deep" and "nests deeper than 32" in error["error"]
    assert error["field"].startswith("payload.deep")
    assert stored_event_ids(hook_settings) == {f"good-{i}" for i in range(99)}
    assert post(hooks, [event("after", payload={"first_name": "Ann"})]).status_code == 200


def test_integers_past_64_bits_are_refused_not_stored_as_floats(
    hooks: TestClient, hook_settings: Settings, signer: TokenSigner
) -> None:
    # Bug: orjson decodes 18446744073709551616 (2**64) as a float; it was stored as 1.8446744073709552e19.
    big = (
        b'{"id": "big", "type": "profile.updated", "recipient": "'
        + recipient_id(1).encode()
        + b'", "occurred_at": "2024-05-01T10:00:00Z", "payload": {"points": 18446744073709551616}}'
    )
    body = b"[" + big + b"," + orjson.dumps(event("fine")) + b"]"
    response = post(hooks, None, body=body)
    assert response.status_code == 207, response.text
    [error] = response.json()["errors"]
    assert (error["index"], error["field"], error["id"]) == (0, "payload.points", "big")
    assert "signed 64 bits" in error["error"]
    assert stored_event_ids(hook_settings) == {"fine"}


def test_a_deep_value_stored_before_the_cap_is_repaired_by_the_documented_null(
    hooks: TestClient, hook_settings: Settings
) -> None:
    # A list 253 deep in a stored profile (an import before the cap): every event of the recipient
    # failed, the documented repair (profile.updated with "deep": null) too.
    deep: Any = 1
    for _ in range(253):
        deep = [deep]
    load_rows(hook_settings.database_url, [("deep-one", orjson.dumps({"deep": deep, "name": "Ann"}))])
    response = post(hooks, [event("repair", recipient="deep-one", payload={"deep": None})])
    assert response.status_code == 200, response.text
    assert response.json()["applied"] == 1
    conn = sqlite3.connect(hook_settings.database_url.removeprefix("sqlite:///"))
    try:
        [(stored,)] = conn.execute("SELECT attributes FROM profiles WHERE recipient_id = 'deep-one'")
    finally:
        conn.close()
    assert orjson.loads(stored) == {"name": "Ann"}
