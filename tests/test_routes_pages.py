"""HTML fragments and the web view through the full app."""

from __future__ import annotations

import re
import time

import pytest
from starlette.testclient import TestClient

from app.demo import recipient_id
from app.security.keyring import KeyRing
from app.security.tokens import TokenSigner, TokenVerifier


def token(signer: TokenSigner, recipient: str = recipient_id(1), **kw: int) -> str:
    return signer.sign("demo", recipient, now=int(time.time()), **kw)


def test_fragment_renders_the_recipients_items(client: TestClient, signer: TokenSigner) -> None:
    response = client.get(f"/v1/{token(signer)}/html/picks")
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    assert response.headers["cache-control"] == "private, no-store"
    assert "x-opentime-fallback" not in response.headers
    assert response.text.count("https://shop.example.com/p/sku-") == 8  # 4 items, image + name links


def test_fragment_fallbacks(client: TestClient, signer: TokenSigner) -> None:
    unknown = client.get(f"/v1/{token(signer, 'ghost')}/html/picks")
    assert unknown.headers["x-opentime-fallback"] == "unknown-recipient"
    assert "Bestsellers of the week" in unknown.text
    expired = signer.sign("demo", recipient_id(1), now=int(time.time()) - 10, ttl_seconds=1)
    assert client.get(f"/v1/{expired}/html/picks").headers["x-opentime-fallback"] == "token-expired"
    bad = client.get(f"/v1/{token(signer)[:-2]}xx/html/picks")  # names the campaign: its public items
    assert (bad.status_code, bad.text) == (200, unknown.text)
    assert bad.headers["x-opentime-fallback"].startswith("token-")
    garbage = client.get("/v1/not-a-token/html/picks")  # names no campaign: nothing to show
    assert (garbage.status_code, garbage.text, garbage.headers["x-opentime-fallback"]) == (
        200,
        "",
        "token-malformed",
    )


def test_fragment_for_block_without_template_is_empty(client: TestClient, signer: TokenSigner) -> None:
    response = client.get(f"/v1/{token(signer)}/html/hello")
    assert (response.status_code, response.text, response.headers["x-opentime-fallback"]) == (
        200,
        "",
        "unknown-block",
    )


def test_web_view_shows_live_data(client: TestClient, signer: TokenSigner) -> None:
    response = client.get(f"/v1/{token(signer)}/view")
    assert response.status_code == 200
    assert response.headers["referrer-policy"] == "no-referrer"
    assert "<h1" in response.text and "shop.example.com/p/sku-" in response.text


def test_web_view_of_bad_token_shows_no_data(client: TestClient, signer: TokenSigner) -> None:
    for bad in ("AAAA", token(signer)[:-3] + "AAA"):
        response = client.get(f"/v1/{bad}/view")
        assert response.status_code == 200
        assert "no longer available" in response.text
        assert "sku-" not in response.text


def test_web_view_after_expiry_shows_the_campaigns_non_personal_version(
    client: TestClient, signer: TokenSigner
) -> None:
    live = client.get(f"/v1/{token(signer)}/view").text
    name = re.search(r"<h1[^>]*>Hi ([^!<]+)!</h1>", live)
    assert name and name[1] != "there"
    old = signer.sign("demo", recipient_id(1), now=int(time.time()) - 500 * 86400, ttl_seconds=86400)
    response = client.get(f"/v1/{old}/view")
    assert (response.status_code, response.headers["x-opentime-fallback"]) == (200, "token-expired")
    page = response.text
    assert "Hi there!" in page and "Bestsellers of the week" in page  # the email, without anyone's data
    assert name[1] not in page and "sku-" not in page and recipient_id(1) not in page
    assert f"/v1/{old}/img/banner@2x.png" in page  # its images answer their designed fallback
    timer = re.search(r"/v1/([^/]+)/img/countdown\.gif", page)
    assert timer and timer[1] != old  # the campaign-wide countdown keeps a live (shared) token


@pytest.mark.parametrize("path", ["/v1/x/view/extra", "/v1/x/html", "/v1/x/nothing/y"])
def test_malformed_page_urls_are_404_json(client: TestClient, path: str) -> None:
    response = client.get(path)
    assert response.status_code == 404
    assert "error" in response.json()


def test_post_to_view_is_405(client: TestClient, signer: TokenSigner) -> None:
    assert client.post(f"/v1/{token(signer)}/view").status_code == 405


def test_web_view_reuses_the_presented_token_and_never_mints_one(
    client: TestClient, signer: TokenSigner, ring: KeyRing
) -> None:
    # Attack: a token with a day left, opened in the browser, must not come back as 31-day tokens.
    short = signer.sign("demo", recipient_id(1), now=int(time.time()), ttl_seconds=86400)
    page = client.get(f"/v1/{short}/view").text
    tokens = set(re.findall(r"/v1/([A-Za-z0-9_.-]+)/(?:list|html|img|view|form)", page))
    verifier = TokenVerifier(ring)
    others = [verifier.verify(t, now=int(time.time())) for t in tokens - {short}]
    assert short in tokens
    assert all(claims.recipient is None for claims in others)  # only campaign-wide (countdown) tokens
