"""The amp-list endpoint through the full ASGI app (lifespan, real SQLite file)."""

from __future__ import annotations

import time

import orjson
import pytest
from starlette.testclient import TestClient

from app.demo import recipient_id
from app.security.tokens import TokenSigner
from tests.conftest import BASE_URL, SENDER

AMP = {"AMP-Email-Sender": SENDER}


def get(
    client: TestClient, path: str, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    response = client.get(path, headers=AMP if headers is None else headers)
    return response.status_code, dict(response.headers), response.content


def token_for(signer: TokenSigner, recipient: str, **kw: int) -> str:
    return signer.sign("demo", recipient, now=int(time.time()), **kw)


def test_recipient_items_are_served_with_amp_headers(client: TestClient, signer: TokenSigner) -> None:
    status, headers, body = get(client, f"/v1/{token_for(signer, recipient_id(1))}/list/picks.json")
    assert status == 200
    assert headers["content-type"] == "application/json"
    assert headers["cache-control"] == "private, no-store"
    assert headers["amp-email-allow-sender"] == SENDER
    assert "x-opentime-fallback" not in headers
    items = orjson.loads(body)["items"]
    assert len(items) == 4
    assert all(i["url"].startswith("https://shop.example.com/p/sku-") for i in items)
    # The demo's product pictures are served by the server itself, under its public base URL.
    assert all(i["image"].startswith(f"{BASE_URL}/static/demo/products/sku-") for i in items)
    assert all(i["price"].startswith("$") for i in items)


def test_second_open_is_served_from_cache_with_same_body(client: TestClient, signer: TokenSigner) -> None:
    path = f"/v1/{token_for(signer, recipient_id(2))}/list/hello.json"
    first, second = get(client, path), get(client, path)
    assert first[2] == second[2]
    assert orjson.loads(first[2])["items"][0]["first_name"]


def test_unknown_recipient_gets_block_fallback(client: TestClient, signer: TokenSigner) -> None:
    status, headers, body = get(client, f"/v1/{token_for(signer, 'nobody-here')}/list/picks.json")
    assert status == 200
    assert headers["x-opentime-fallback"] == "unknown-recipient"
    assert orjson.loads(body)["items"][0]["name"] == "Bestsellers of the week"


def static_items(client: TestClient, signer: TokenSigner) -> bytes:
    """What every recipient without data gets: the block's static fallback items."""
    status, headers, body = get(client, f"/v1/{token_for(signer, 'nobody-here')}/list/picks.json")
    assert (status, headers["x-opentime-fallback"]) == (200, "unknown-recipient")
    return body


@pytest.mark.parametrize("position", [6, -2])
def test_tampered_token_naming_the_campaign_gets_the_blocks_static_items(
    client: TestClient, signer: TokenSigner, position: int
) -> None:
    """A forged key id (6) or MAC (-2): the campaign it names picks public static items, nothing personal."""
    token = token_for(signer, recipient_id(1))
    swapped = "A" if token[position] != "A" else "B"
    tampered = token[:position] + swapped + token[position + 1 :]
    status, headers, body = get(client, f"/v1/{tampered}/list/picks.json")
    assert status == 200
    assert headers["x-opentime-fallback"] in {"token-bad-signature", "token-unknown-key"}
    assert body == static_items(client, signer)
    assert orjson.loads(body)["items"][0]["name"] == "Bestsellers of the week"


def test_esp_token_with_a_bad_mac_gets_the_campaigns_static_items(
    client: TestClient, signer: TokenSigner
) -> None:
    forged = signer.sign_esp("demo", recipient_id(1))[:-4] + "0000"
    status, headers, body = get(client, f"/v1/{forged}/list/picks.json")
    assert (status, headers["x-opentime-fallback"], body) == (
        200,
        "token-bad-signature",
        static_items(client, signer),
    )


def test_token_naming_no_campaign_is_a_404_so_amp_list_shows_its_fallback(client: TestClient) -> None:
    """amp-list shows the author's <div fallback> when the fetch fails; {"items":[]} would be an empty box."""
    status, headers, body = get(client, "/v1/not-a-token-at-all/list/picks.json")
    assert (status, headers["x-opentime-fallback"]) == (404, "token-malformed")
    assert headers["amp-email-allow-sender"] == SENDER  # amp-list must be allowed to read the failure
    assert orjson.loads(body)["reason"] == "token-malformed"
    assert "fallback" in orjson.loads(body)["error"]


def test_expired_token_gets_the_blocks_fallback_not_personal_data(
    client: TestClient, signer: TokenSigner
) -> None:
    old = signer.sign("demo", recipient_id(1), now=int(time.time()) - 40 * 86400, ttl_seconds=86400)
    status, headers, body = get(client, f"/v1/{old}/list/picks.json")
    assert (status, headers["x-opentime-fallback"]) == (200, "token-expired")
    assert b"sku-" not in body


def test_unknown_block_and_unknown_campaign_are_404_for_the_amp_list_fallback(
    client: TestClient, signer: TokenSigner
) -> None:
    status, headers, body = get(client, f"/v1/{token_for(signer, recipient_id(1))}/list/nope.json")
    assert (status, headers["x-opentime-fallback"]) == (404, "unknown-block")
    assert orjson.loads(body)["reason"] == "unknown-block"
    other = signer.sign("no-such-campaign", recipient_id(1), now=int(time.time()))
    status, headers, _ = get(client, f"/v1/{other}/list/picks.json")
    assert (status, headers["x-opentime-fallback"]) == (404, "unknown-block")


def test_added_query_parameters_are_ignored(client: TestClient, signer: TokenSigner) -> None:
    path = f"/v1/{token_for(signer, recipient_id(3))}/list/picks.json"
    plain = get(client, path)[2]
    query = "?__amp_source_origin=news%40example.com&utm_source=x&q=1"
    v1_headers = {"Origin": "https://mail.google.com"}
    status, headers, body = get(client, path + query, v1_headers)
    assert (status, body) == (200, plain)
    assert headers["access-control-allow-origin"] == "https://mail.google.com"
    assert headers["amp-access-control-allow-source-origin"] == SENDER


def test_sender_not_allowed_is_403_without_body_or_cors(client: TestClient, signer: TokenSigner) -> None:
    path = f"/v1/{token_for(signer, recipient_id(1))}/list/picks.json"
    status, headers, body = get(client, path, {"AMP-Email-Sender": "spam@evil.example"})
    assert (status, body) == (403, b"")
    assert not [h for h in headers if h.startswith(("access-control", "amp-"))]
    assert get(client, path, {})[0] == 403


def test_version_1_cors_preflight_and_errors_carry_the_cors_headers(
    client: TestClient, signer: TokenSigner
) -> None:
    # Older AMP clients send Origin plus __amp_source_origin; the answer must echo both, on errors too,
    # or the client drops the response and shows nothing at all.
    v1 = {"Origin": "https://mail.google.com"}
    query = f"?__amp_source_origin={SENDER.replace('@', '%40')}"
    path = f"/v1/{token_for(signer, recipient_id(1))}/list/picks.json{query}"
    response = client.get(path, headers=v1)
    assert response.status_code == 200 and response.json()["items"]
    assert response.headers["access-control-allow-origin"] == "https://mail.google.com"
    assert response.headers["amp-access-control-allow-source-origin"] == SENDER
    assert response.headers["access-control-allow-credentials"] == "true"
    preflight = client.options(path, headers=v1)
    assert (preflight.status_code, preflight.content) == (204, b"")
    assert preflight.headers["access-control-allow-methods"] == "GET, POST, OPTIONS"
    for wrong in (client.get(f"/v1/t/list/a/b{query}", headers=v1), client.delete(path, headers=v1)):
        assert wrong.status_code in (404, 405)
        assert wrong.headers["amp-access-control-allow-source-origin"] == SENDER


def test_head_has_headers_but_no_body(client: TestClient, signer: TokenSigner) -> None:
    response = client.head(f"/v1/{token_for(signer, recipient_id(1))}/list/picks.json", headers=AMP)
    assert response.status_code == 200
    assert response.content == b""
    assert int(response.headers["content-length"]) > 0


@pytest.mark.parametrize(
    "path",
    ["/v1/x/list/picks", "/v1/x/list/picks.json/", "/v1/x/list/", "/v1/x/other/picks.json", "/v1/"],
)
def test_malformed_paths_are_json_4xx_never_redirects(client: TestClient, path: str) -> None:
    response = client.get(path, headers=AMP)
    assert 400 <= response.status_code < 500
    assert response.status_code != 403 or response.content == b""


def test_wrong_method_is_405_json(client: TestClient, signer: TokenSigner) -> None:
    response = client.post(f"/v1/{token_for(signer, recipient_id(1))}/list/picks.json", headers=AMP)
    assert response.status_code == 405
    assert "use GET" in response.json()["error"]


def test_store_failure_serves_fallback_not_500(client: TestClient, signer: TokenSigner) -> None:
    services = client.app_state["services"]
    client.portal.call(services.store.close)  # type: ignore[union-attr]
    status, headers, body = get(client, f"/v1/{token_for(signer, recipient_id(5))}/list/picks.json")
    assert status == 200
    assert headers["x-opentime-fallback"] == "store-error"
    assert orjson.loads(body)["items"]


def test_unknown_routes_are_json_404_and_health(client: TestClient) -> None:
    response = client.get("/nope")
    assert response.status_code == 404
    assert response.json() == {"error": "Not Found"}
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz").json()
    assert ready["status"] == "ready" and "demo" in ready["campaigns"]


def test_readiness_says_unavailable_without_details(client: TestClient) -> None:
    services = client.app_state["services"]
    client.portal.call(services.store.close)  # type: ignore[union-attr]
    response = client.get("/readyz")
    assert response.status_code == 503
    assert response.json() == {"status": "unavailable", "reason": "store"}
