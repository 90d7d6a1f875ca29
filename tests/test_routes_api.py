"""POST /api/render: auth, validation and rendered output."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from app.app import create_app
from app.campaigns.validator import AmpValidator
from app.config import Settings
from app.routes.api import UNREADABLE_PROFILE
from app.security.apikeys import create_key
from app.security.tokens import check_recipient
from app.store import open_store
from tests.conftest import BASE_URL
from tests.eml_checks import assert_complete, assert_mailparser_agrees, contents, read_strict
from tests.node_tools import NodeTools
from tests.test_cli_render import without_sender


def make_key(settings: Settings, *scopes: str) -> str:
    async def create() -> str:
        store = open_store(settings.database_url)
        await store.open()
        try:
            return (await create_key(store.api_keys, "test", scopes, time.time()))[1]
        finally:
            await store.close()

    return asyncio.run(create())


@pytest.fixture
def render_key(settings: Settings) -> str:
    return make_key(settings, "render")


def post(client: TestClient, key: str | None, body: object, **kw: str) -> tuple[int, dict[str, object]]:
    headers = {"authorization": f"Bearer {key}"} if key else {}
    response = client.post("/api/render", json=body, headers=headers)
    return response.status_code, response.json()


def test_batch_render_returns_three_parts_per_recipient(client: TestClient, render_key: str) -> None:
    status, data = post(client, render_key, {"campaign": "demo", "recipients": ["cust-0000001", "ghost"]})
    assert status == 200
    results = data["results"]
    assert isinstance(results, list) and [r["recipient"] for r in results] == ["cust-0000001", "ghost"]
    assert [r["found"] for r in results] == [True, False]
    assert all("/v1/" in r["amp"] and r["text"] and r["html"] for r in results)


def test_eml_format_is_a_complete_message_both_parsers_read(
    client: TestClient, render_key: str, node_tools: NodeTools, amp_validator: AmpValidator
) -> None:
    body = {
        "campaign": "demo",
        "format": "eml",
        "from": "Shop <news@example.com>",
        "recipients": [{"id": "cust-0000002", "to": "Zoë <zoe@bücher.example>"}, "cust-0000003"],
    }
    status, data = post(client, render_key, body)
    assert status == 200
    results = data["results"]
    assert isinstance(results, list) and all(r["warnings"] == [] for r in results)
    raws = [r["eml"].encode("ascii") for r in results]
    messages = [read_strict(raw) for raw in raws]
    assert_complete(messages[0], now=time.time(), to=True)
    assert_complete(messages[1], now=time.time(), to=False)
    assert messages[0]["To"] == "Zoë <zoe@xn--bcher-kva.example>"
    assert all(m["From"] == "Shop <news@example.com>" for m in messages)
    assert messages[0]["Message-ID"] != messages[1]["Message-ID"]
    seen = assert_mailparser_agrees(node_tools, raws)
    assert seen[0]["to"] == [{"name": "Zoë", "address": "zoe@bücher.example"}]
    verdicts = amp_validator.validate_many([contents(m)[1] for m in messages])
    assert all(v.passed for v in verdicts), [v.format() for v in verdicts]


def test_eml_uses_the_campaigns_from_when_the_request_has_none(client: TestClient, render_key: str) -> None:
    status, data = post(client, render_key, {"campaign": "demo", "format": "eml", "recipients": ["r"]})
    assert status == 200
    message = read_strict(data["results"][0]["eml"].encode())  # type: ignore[index]
    assert message["From"] == "Opentime Demo <news@example.com>"
    assert message["Message-ID"].endswith("@example.com>")


def test_from_equal_to_to_warns(client: TestClient, render_key: str) -> None:
    recipients = [{"id": "r", "to": "News <News@Example.com>"}]
    status, data = post(client, render_key, {"campaign": "demo", "format": "eml", "recipients": recipients})
    assert status == 200
    results = data["results"]
    assert isinstance(results, list) and len(results) == 1
    result = results[0]
    assert "eml" in result
    assert result["warnings"] == [
        "From and To are the same address (news@example.com): "
        "Gmail shows the HTML part, not the AMP part, when sender and recipient are the same"
    ]


def test_without_any_from_eml_is_a_400_and_parts_warn(
    settings: Settings, tmp_path: Path, render_key: str
) -> None:
    with TestClient(create_app(without_sender(settings, tmp_path)), base_url=BASE_URL) as bare:
        status, data = post(bare, render_key, {"campaign": "demo", "format": "eml", "recipients": ["r"]})
        assert status == 400
        assert data["error"] == (
            "from: no From address: campaign 'demo' declares none (from = \"Name <news@example.com>\" "
            'under [campaign] in its blocks.toml) and none was given: send "from"'
        )
        status, data = post(bare, render_key, {"campaign": "demo", "recipients": ["r"]})
        assert status == 200
        assert data["results"][0]["warnings"][-1].endswith('none was given; "format": "eml" needs one')  # type: ignore[index]
        body = {"campaign": "demo", "format": "eml", "from": "news@example.com", "recipients": ["r"]}
        status, data = post(bare, render_key, body)
        assert status == 200 and data["results"][0]["warnings"] == []  # type: ignore[index]


def test_auth_is_required_with_the_render_scope(client: TestClient, settings: Settings) -> None:
    status, data = post(client, None, {"campaign": "demo", "recipients": ["r"]})
    assert status == 401 and "error" in data
    status, _ = post(client, make_key(settings, "preview"), {"campaign": "demo", "recipients": ["r"]})
    assert status == 403
    status, _ = post(client, "otk_deadbeef_" + "A" * 43, {"campaign": "demo", "recipients": ["r"]})
    assert status == 401


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        ({"campaign": "nope", "recipients": ["r"]}, 404, "unknown campaign"),
        ({"recipients": ["r"]}, 400, "campaign"),
        ({"campaign": "demo", "recipients": []}, 400, "non-empty"),
        ({"campaign": "demo", "recipients": ["r"] * 501}, 400, "at most 500"),
        ({"campaign": "demo", "recipients": [{"to": "x"}]}, 400, "recipients[0]"),
        ({"campaign": "demo", "recipients": ["r"], "format": "pdf"}, 400, "format"),
        ({"campaign": "demo", "recipients": ["r"], "colour": 1}, 400, "unknown field"),
        # Was ignored: the email then went out without the To the caller meant ("To" misspelt).
        (
            {"campaign": "demo", "recipients": [{"id": "r", "To": "a@example.com"}]},
            400,
            "recipients[0]: unknown",
        ),
        ({"campaign": "demo", "recipients": ["a\nb"]}, 400, "control characters"),
        ([1, 2], 400, "JSON object"),
    ],
)
def test_bad_requests_are_clear_4xx(
    client: TestClient, render_key: str, body: object, status: int, message: str
) -> None:
    got_status, data = post(client, render_key, body)
    assert got_status == status
    assert message in str(data["error"])


def test_wrong_content_type_and_oversized_body(client: TestClient, render_key: str) -> None:
    headers = {"authorization": f"Bearer {render_key}"}
    response = client.post(
        "/api/render", content=b"campaign=demo", headers={**headers, "content-type": "text/plain"}
    )
    assert response.status_code == 415
    big = b'{"campaign": "demo", "recipients": ["' + b"x" * (1024 * 1024) + b'"]}'
    response = client.post(
        "/api/render", content=big, headers={**headers, "content-type": "application/json"}
    )
    assert response.status_code == 413
    response = client.post(
        "/api/render", content=b"{nope", headers={**headers, "content-type": "application/json"}
    )
    assert response.status_code == 400 and "not valid JSON" in response.json()["error"]


@pytest.mark.parametrize("rid", ["a\x85b", "\x7f", "é" * 150, "a\u009fb"])
def test_recipient_ids_are_checked_with_the_signers_rule(
    client: TestClient, render_key: str, rid: str
) -> None:
    # These passed the route's own check, then TokenSigner.sign raised ValueError: a 500 for the batch.
    status, data = post(client, render_key, {"campaign": "demo", "recipients": ["cust-0000001", rid]})
    assert status == 400
    assert str(data["error"]).startswith("recipients[1]: recipient id")


def test_check_recipient_is_the_rule_sign_applies() -> None:
    check_recipient("é" * 100)
    for bad in ["", "a\x85b", "é" * 101]:
        with pytest.raises(ValueError, match="recipient id"):
            check_recipient(bad)


@pytest.mark.parametrize("value", ["a\u2028b", "a\u2029b", "a\x0bb", "a\x85b", "a\x1cb", "a\tb", "a\x00b"])
def test_header_values_that_break_lines_are_rejected(client: TestClient, render_key: str, value: str) -> None:
    # The email package refuses these in headers with ValueError, which used to fail the whole batch.
    body = {"campaign": "demo", "format": "eml", "recipients": [{"id": "r", "to": value}]}
    status, data = post(client, render_key, body)
    assert status == 400 and "recipients[0].to" in str(data["error"])
    status, data = post(client, render_key, {**body, "recipients": ["r"], "from": value})
    assert status == 400 and str(data["error"]).startswith("from:")


@pytest.mark.parametrize(
    ("to", "message"),
    [
        ("<", "recipients[1].to: '<' has a '<' without a closing '>'"),
        ("a@[", "recipients[1].to: domain literal [ is not supported"),
        (
            "ada@bücher_shop.example",
            "recipients[1].to: domain 'bücher_shop.example' is not a valid domain name",
        ),
        ("zoë@example.com", "recipients[1].to: local part 'zoë' is not ASCII"),
        (
            "a@example.org, b@example.org",
            "recipients[1].to: 'a@example.org, b@example.org' holds more than one",
        ),
    ],
)
def test_an_invalid_address_is_a_400_naming_it(
    client: TestClient, render_key: str, to: str, message: str
) -> None:
    recipients = [{"id": "a", "to": "a@example.org"}, {"id": "b", "to": to}]
    status, data = post(client, render_key, {"campaign": "demo", "format": "eml", "recipients": recipients})
    assert status == 400 and str(data["error"]).startswith(message), data
    body = {"campaign": "demo", "format": "eml", "from": to, "recipients": ["r"]}
    status, data = post(client, render_key, body)
    assert status == 400 and str(data["error"]).startswith("from: ")


def test_a_corrupt_stored_profile_renders_without_data(
    client: TestClient, render_key: str, settings: Settings
) -> None:
    path = settings.database_url.removeprefix("sqlite:///")
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE profiles SET attributes = ? WHERE recipient_id = ?", (b"{nope", "cust-0000001"))
        conn.execute("UPDATE profiles SET attributes = ? WHERE recipient_id = ?", (b"[1]", "cust-0000002"))
    conn.close()
    recipients = ["cust-0000001", "cust-0000002", "cust-0000003"]
    status, data = post(client, render_key, {"campaign": "demo", "recipients": recipients})
    assert status == 200
    results = data["results"]
    assert isinstance(results, list)
    assert [r["found"] for r in results] == [False, False, True]
    assert [UNREADABLE_PROFILE in r["warnings"] for r in results] == [True, True, False]
