"""``GET /preview`` and ``GET /preview/{campaign}`` through the full app (the browser test is separate)."""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from starlette.testclient import TestClient

from app.app import create_app
from app.campaigns.validator import AmpValidator
from app.config import Settings
from app.demo import demo_rows, recipient_id
from app.security.apikeys import create_key
from app.store import open_store
from tests.conftest import BASE_URL, DEMO_COUNT, insecure_demo, load_rows

CHALLENGE = 'Basic realm="Opentime preview"'


def basic(key: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"marketer:{key}".encode()).decode()}


@pytest.fixture
def keys(settings: Settings) -> dict[str, str]:
    async def make() -> dict[str, str]:
        store = open_store(settings.database_url)
        await store.open()
        try:
            return {
                s: (await create_key(store.api_keys, s, [s], time.time()))[1]
                for s in ("preview", "render", "admin")
            }
        finally:
            await store.close()

    return asyncio.run(make())


def preview_client(settings: Settings, validator: AmpValidator) -> TestClient:
    client = TestClient(create_app(settings), base_url=BASE_URL, follow_redirects=False)
    client.app.starlette.state.amp_validator = validator  # type: ignore[attr-defined]
    return client


@pytest.fixture
def auth(keys: dict[str, str]) -> dict[str, str]:
    return basic(keys["preview"])


@pytest.fixture
def client(settings: Settings, keys: dict[str, str], tmp_path: Path) -> Iterator[TestClient]:
    # A validator whose files are missing: fast, and the page must say so rather than fail.
    absent = AmpValidator("node", tmp_path / "no-validator")
    with preview_client(settings, absent) as test_client:
        yield test_client


def first_name(recipient: str) -> str:
    name: str = orjson.loads(dict(demo_rows(DEMO_COUNT))[recipient])["first_name"]
    return name


def test_preview_asks_browsers_for_a_key(client: TestClient) -> None:
    for path in ("/preview", "/preview/demo?recipient=cust-0000001", "/preview/no-such-campaign"):
        response = client.get(path)
        assert response.status_code == 401, path
        assert response.headers["www-authenticate"] == CHALLENGE
        assert response.json()["error"].startswith("missing API key")
    wrong = client.get("/preview/demo", headers=basic("otk_0123abcd_" + "x" * 43))
    assert (wrong.status_code, wrong.headers["www-authenticate"]) == (401, CHALLENGE)


def test_preview_needs_the_preview_scope(client: TestClient, keys: dict[str, str]) -> None:
    for headers in (basic(keys["render"]), {"Authorization": f"Bearer {keys['render']}"}):
        response = client.get("/preview/demo", headers=headers)
        assert response.status_code == 403
        assert "'preview' scope" in response.json()["error"]


def test_preview_page_for_a_recipient(client: TestClient, keys: dict[str, str]) -> None:
    recipient = recipient_id(2)
    response = client.get(f"/preview/demo?recipient={recipient}", headers=basic(keys["preview"]))
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["x-frame-options"] == "DENY"
    csp = response.headers["content-security-policy"]
    assert "default-src 'none'" in csp and "frame-ancestors 'none'" in csp and "script" not in csp
    page = response.text
    assert f"{first_name(recipient)}, your picks for this week" in page  # the subject
    assert 'id="html-part"' in page and 'sandbox=""' in page and "srcdoc=" in page
    assert 'id="block-hello"' in page and 'id="block-picks"' in page
    assert "{\n  &#34;items&#34;: [" in page  # a block's JSON, pretty-printed and escaped
    assert "https://shop.example.com/p/sku-" in page
    assert "UNAVAILABLE" in page and "tools/install-amp-validator.sh" in page
    for headers in ({"Authorization": f"Bearer {keys['preview']}"}, {"X-API-Key": keys["admin"]}):
        assert client.get(f"/preview/demo?recipient={recipient}", headers=headers).status_code == 200


def test_preview_without_recipient_shows_the_form(client: TestClient, keys: dict[str, str]) -> None:
    response = client.get("/preview/demo", headers=basic(keys["preview"]))
    assert response.status_code == 200
    assert 'name="recipient"' in response.text and 'name="at"' in response.text
    assert 'id="html-part"' not in response.text


def test_preview_index_links_every_campaign(client: TestClient, keys: dict[str, str]) -> None:
    response = client.get("/preview", headers=basic(keys["preview"]))
    assert response.status_code == 200
    assert response.headers["x-frame-options"] == "DENY"
    assert 'href="/preview/demo"' in response.text


def test_unknown_campaign_is_a_json_404(client: TestClient, keys: dict[str, str]) -> None:
    response = client.get("/preview/no-such-campaign?recipient=x", headers=basic(keys["preview"]))
    assert response.status_code == 404
    assert response.json() == {"error": "unknown campaign 'no-such-campaign'"}


@pytest.mark.parametrize("at", ["yesterday", "2024-13-01", "2024-02-30T10:00:00", "10:00"])
def test_bad_open_time_is_a_json_400(client: TestClient, keys: dict[str, str], at: str) -> None:
    response = client.get(
        "/preview/demo", params={"recipient": "x", "at": at}, headers=basic(keys["preview"])
    )
    assert response.status_code == 400
    assert "ISO 8601" in response.json()["error"]


@pytest.mark.parametrize("at", ["0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00"])
def test_open_time_out_of_range_in_utc_is_a_json_400(
    client: TestClient, keys: dict[str, str], at: str
) -> None:
    # These parse, then overflow when moved to UTC: the OverflowError used to be a 500.
    response = client.get(
        "/preview/demo", params={"recipient": "x", "at": at}, headers=basic(keys["preview"])
    )
    assert response.status_code == 400
    assert "outside the years 1 to 9999" in response.json()["error"]


@pytest.mark.parametrize("recipient", ["a" * 201, "a\x01b"])
def test_unusable_recipient_id_is_a_json_400(
    client: TestClient, keys: dict[str, str], recipient: str
) -> None:
    response = client.get("/preview/demo", params={"recipient": recipient}, headers=basic(keys["preview"]))
    assert response.status_code == 400
    assert response.json()["error"].startswith("bad recipient")


def test_open_time_is_shown_in_utc(client: TestClient, keys: dict[str, str]) -> None:
    params = {"recipient": recipient_id(1), "at": "2030-01-02T03:04:05+02:00"}
    response = client.get("/preview/demo", params=params, headers=basic(keys["preview"]))
    assert "2030-01-02 01:04:05 UTC" in response.text
    assert 'value="2030-01-02T01:04:05"' in response.text


def test_unknown_recipient_gets_fallback_blocks(client: TestClient, keys: dict[str, str]) -> None:
    response = client.get("/preview/demo?recipient=ghost", headers=basic(keys["preview"]))
    assert response.status_code == 200
    assert "fallback: unknown-recipient" in response.text
    assert "Bestsellers of the week" in response.text
    # which image layers this recipient's open draws without data, and why
    section = response.text[response.text.index('id="image-banner"') :]
    section = section[: section.index("</article>")]
    assert "1 layer without data" in section
    assert (
        "<code>layers[1]</code>" in section
        and "missing &#39;loyalty&#39;, <strong>default</strong>" in section
    )


def test_hostile_profile_values_are_escaped(
    settings: Settings, keys: dict[str, str], client: TestClient
) -> None:
    # Attack: a customer sets their name (or a product name reaches their recommendations) to markup,
    # hoping it runs in the preview page of a logged-in marketer. Every value must arrive escaped:
    # once in the page, twice inside the iframe's srcdoc.
    hostile = "<script>alert(1)</script>\"'><img src=x onerror=alert(2)>"
    profile = {
        "first_name": hostile,
        "loyalty": {"points": 1, "tier": hostile},
        "recommendations": [{"name": hostile, "price": 1.0, "sku": "sku-1", "image": "a.jpg"}],
    }
    load_rows(settings.database_url, [("evil", orjson.dumps(profile))])
    page = client.get("/preview/demo?recipient=evil", headers=basic(keys["preview"])).text
    assert "<script>alert" not in page and "<img src=x" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page  # the JSON blocks and the subject
    assert "&amp;lt;script&amp;gt;alert(1)" in page  # the email inside srcdoc, escaped twice
    assert (
        "script-src"
        not in client.get("/preview", headers=basic(keys["preview"])).headers["content-security-policy"]
    )


def test_official_validator_verdicts(
    settings: Settings, keys: dict[str, str], amp_validator: AmpValidator, tmp_path: Path
) -> None:
    with preview_client(settings, amp_validator) as client:
        page = client.get(f"/preview/demo?recipient={recipient_id(1)}", headers=basic(keys["preview"])).text
        assert '<span class="badge verdict ok">PASS</span>' in page
        assert f"Validated with URLs on <code>{BASE_URL}</code>, the server" in page
    # A hard-coded http image in the AMP template: an authoring mistake the validator fails.
    with preview_client(insecure_demo(settings, tmp_path), amp_validator) as client:
        page = client.get(f"/preview/demo?recipient={recipient_id(1)}", headers=basic(keys["preview"])).text
        assert '<span class="badge verdict bad">FAIL</span>' in page
        assert "INVALID_URL_PROTOCOL" in page
        assert '<li class="bad">' in page  # the offending AMP source line is highlighted
        assert "cdn.example.com/x.png" in page


def test_an_http_base_url_is_validated_as_sent(
    settings: Settings, keys: dict[str, str], amp_validator: AmpValidator
) -> None:
    # serve --demo on http://127.0.0.1: AMP clients would refuse http URLs, so the AMP part is
    # validated as sent, with a placeholder https origin, and the page says so.
    local = settings.replace(public_base_url="http://localhost:8000")
    with preview_client(local, amp_validator) as client:
        page = client.get(f"/preview/demo?recipient={recipient_id(1)}", headers=basic(keys["preview"])).text
    assert '<span class="badge verdict ok">PASS</span>' in page
    origin = page.split('id="validated-origin">', 1)[1].split("</p>", 1)[0]
    assert "Validated with URLs on <code>https://amp.example.com</code>: a placeholder https origin" in origin
    assert "<code>http://localhost:8000</code> is plain http" in origin
    source = page.split('<ol class="source">', 1)[1]
    assert "https://amp.example.com/v1/" in source and "localhost:8000" not in source  # what was validated
    assert "http://localhost:8000/v1/" in page.split('id="html-part"', 1)[1]  # what is shown: its images load


def test_the_csp_allows_the_servers_own_images_only_besides_https(
    settings: Settings, keys: dict[str, str], tmp_path: Path
) -> None:
    absent = AmpValidator("node", tmp_path / "no-validator")
    for base, own in (("http://127.0.0.1:8000", "http://127.0.0.1:8000"), (BASE_URL, BASE_URL)):
        with preview_client(settings.replace(public_base_url=base + "/amp"), absent) as client:
            for path in ("/preview", "/preview/demo", f"/preview/demo?recipient={recipient_id(1)}"):
                csp = client.get(path, headers=basic(keys["preview"])).headers["content-security-policy"]
                directives = dict(d.strip().split(" ", 1) for d in csp.split(";"))
                assert directives["img-src"] == f"'self' {own} https: data:", path
                assert directives["default-src"] == "'none'" and "script-src" not in directives
