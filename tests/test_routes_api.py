"""POST /api/render: auth, validation and rendered output."""

from __future__ import annotations

import asyncio
import email
import email.policy
import time

import pytest
from starlette.testclient import TestClient

from app.apikeys import create_key
from app.config import Settings
from app.store import open_store


def make_key(settings: Settings, *scopes: str) -> str:
    async def create() -> str:
        store = open_store(settings.database_url)
        await store.open()
        try:
            return (await create_key(store, "test", scopes, time.time()))[1]
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


def test_eml_format_parses_as_multipart(client: TestClient, render_key: str) -> None:
    body = {
        "campaign": "demo",
        "format": "eml",
        "from": "Shop <news@example.com>",
        "recipients": [{"id": "cust-0000002", "to": "ada@example.org"}],
    }
    status, data = post(client, render_key, body)
    assert status == 200
    eml = data["results"][0]["eml"]  # type: ignore[index]
    message = email.message_from_string(eml, policy=email.policy.default)
    assert message["To"] == "ada@example.org" and message["From"] == "Shop <news@example.com>"
    assert [p.get_content_type() for p in message.iter_parts()][1] == "text/x-amp-html"


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
