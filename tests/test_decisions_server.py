"""Open-time decisions end to end: real server processes and the real app.

One experiment ("look", red or blue) decides a list, its fragment, an image and the HTML part of the
test campaign ``tests/decisions_campaign/abtest``: a recipient must see one colour everywhere, on
every open, whichever process answers; clicks must lead to what was shown at open time, even after
the data changed; no click may ever lead off the allowed hosts.
"""

from __future__ import annotations

import io
import random
import shutil
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from PIL import Image
from starlette.testclient import TestClient

from app.app import create_app
from app.campaigns.sendtime import SendTime
from app.campaigns.validator import AmpValidator
from app.config import PROJECT_ROOT, Settings
from app.decisions.clicks import safe_target
from app.decisions.exposure import Exposure
from app.demo import recipient_id
from app.render.templates import Templates
from app.security.tokens import TokenSigner
from tests.conftest import BASE_URL, SENDER, load_rows
from tests.servers import free_port, running, server_config

AMP = {"AMP-Email-Sender": SENDER}
DIRECT = {"User-Agent": "Mozilla/5.0 (Windows NT 10.0; Win64; x64) Chrome/120 Safari/537.36"}
DEFAULT = "https://www.example.com/sale"
COLOURS = {(255, 0, 0): "red", (0, 0, 255): "blue"}


@pytest.fixture
def decided(settings: Settings, tmp_path: Path) -> Settings:
    templates = tmp_path / "templates"
    shutil.copytree(PROJECT_ROOT / "amp_templates", templates)
    shutil.copytree(PROJECT_ROOT / "tests" / "decisions_campaign" / "abtest", templates / "abtest")
    return settings.replace(templates_dir=templates, cache_ttl_seconds=1.0, country_header="CF-IPCountry")


def token(signer: TokenSigner, recipient: str, **kwargs: Any) -> str:
    return signer.sign("abtest", recipient, now=int(time.time()), **kwargs)


def list_variant(body: dict[str, Any]) -> str:
    """red or blue: the base of the items' links."""
    (variant,) = {item["url"].split("/")[3] for item in body["items"]}
    return str(variant)


def image_variant(png: bytes) -> str:
    pixel = Image.open(io.BytesIO(png)).convert("RGB").getpixel((5, 5))
    return COLOURS[pixel]  # type: ignore[index]


def parts_seen(base: str, signer: TokenSigner, recipient: str) -> set[str]:
    """The variant each part of the email shows this recipient, asked of the server at ``base``."""
    amp, html = token(signer, recipient), token(signer, recipient, ttl_seconds=400 * 86400)
    seen = set()
    listed = httpx.get(f"{base}/v1/{amp}/list/offers.json", headers={**AMP, **DIRECT}, timeout=5)
    assert listed.status_code == 200 and "x-opentime-fallback" not in listed.headers, listed.text
    seen.add(list_variant(listed.json()))
    image = httpx.get(f"{base}/v1/{html}/img/banner.png", headers=DIRECT, timeout=5)
    seen.add(image_variant(image.content))
    fragment = httpx.get(f"{base}/v1/{html}/html/offers", headers=DIRECT, timeout=5).text
    seen.add(fragment.split('data-variant="')[1].split('"')[0])
    view = httpx.get(f"{base}/v1/{html}/view", headers=DIRECT, timeout=5).text
    offers, banner = view.split('<p id="variant">')[1].split("</p>")[0].split()
    seen |= {offers.removeprefix("offers="), banner.removeprefix("banner=")}
    return seen


@pytest.mark.server
def test_one_recipient_sees_one_variant_in_every_part_on_every_process(
    decided: Settings, tmp_path: Path, signer: TokenSigner
) -> None:
    ports = [free_port() for _ in range(3)]
    with ExitStack() as stack:
        for i, port in enumerate(ports):
            config = server_config(decided, port, tmp_path / f"s{i}.toml")
            stack.enter_context(running(["serve", "--config", str(config)], port, tmp_path / f"s{i}.log"))
        by_recipient: dict[str, str] = {}
        for index in range(1, 9):
            recipient = recipient_id(index)
            seen = set()
            for _ in range(2):  # every open, on every process
                for port in ports:
                    seen |= parts_seen(f"http://127.0.0.1:{port}", signer, recipient)
            assert len(seen) == 1, (recipient, seen)
            by_recipient[recipient] = seen.pop()
    # Both variants are in play (so the pixel check saw two different images), and sending agrees.
    assert set(by_recipient.values()) == {"red", "blue"}
    sendtime = _sendtime(decided, signer)
    for recipient, variant in by_recipient.items():
        rendered = sendtime.render("abtest", recipient, {"recommendations": []})
        assert rendered.text.strip() == f"variant={variant}"


def _sendtime(settings: Settings, signer: TokenSigner) -> SendTime:
    from app.services import load_campaigns_for

    campaigns = load_campaigns_for(settings)
    return SendTime(Templates(settings.templates_dir), campaigns, signer, BASE_URL, time.time)


def test_the_amp_part_of_a_campaign_with_variants_passes_the_validator(
    decided: Settings, signer: TokenSigner, amp_validator: AmpValidator
) -> None:
    sendtime = _sendtime(decided, signer)
    profile = {"recommendations": [{"name": "Tent <b>", "sku": "sku-1"}]}
    parts = [sendtime.render("abtest", recipient_id(i), profile) for i in range(1, 5)]
    parts.append(sendtime.render("flash-sale", recipient_id(1), profile))
    results = amp_validator.validate_many([p.amp for p in parts])
    assert all(r.passed for r in results), [r.format() for r in results if not r.passed]
    assert {p.amp.split("<p>Variant ")[1].split("<")[0] for p in parts[:-1]} <= {"red", "blue"}


def profile_with(*skus: str) -> bytes:
    return orjson.dumps({"recommendations": [{"name": f"Item {s}", "sku": s} for s in skus]})


@pytest.mark.server
def test_a_click_goes_to_what_was_shown_even_after_the_data_changed(
    decided: Settings, tmp_path: Path, signer: TokenSigner
) -> None:
    recipient = "click-reader"
    load_rows(decided.database_url, [(recipient, profile_with("tent", "stove"))])
    port = free_port()
    config = server_config(decided, port, tmp_path / "s.toml")
    base = f"http://127.0.0.1:{port}"
    with running(["serve", "--config", str(config)], port, tmp_path / "s.log"):
        amp = token(signer, recipient)
        shown = httpx.get(f"{base}/v1/{amp}/list/offers.json", headers=AMP, timeout=5).json()["items"]
        variant = list_variant({"items": shown})
        assert shown[1]["click"] == f"{base}/v1/{amp}/click/offers/1"
        # The data changes, and the server sees it (its cache lives one second here).
        load_rows(decided.database_url, [(recipient, profile_with("kayak", "paddle"))])
        time.sleep(1.5)
        # A reader who opened before the change clicks after it, without opening again: the item shown.
        other = "click-reader-2"
        load_rows(decided.database_url, [(other, profile_with("lamp", "rope"))])
        other_amp = token(signer, other)
        before = httpx.get(f"{base}/v1/{other_amp}/list/offers.json", headers=AMP, timeout=5).json()
        load_rows(decided.database_url, [(other, profile_with("boots", "socks"))])
        time.sleep(1.5)
        click = httpx.get(f"{base}/v1/{other_amp}/click/offers/0", timeout=5)
        assert click.status_code == 302
        assert click.headers["location"] == before["items"][0]["url"]
        assert click.headers["location"].endswith("/lamp")
        assert click.headers["cache-control"] == "no-store"
        assert click.headers["referrer-policy"] == "no-referrer"
        # The first reader opens again (the fragment shows the new data): their click follows it.
        fragment = httpx.get(f"{base}/v1/{amp}/html/offers", timeout=5)
        assert "Item kayak" in fragment.text
        click = httpx.get(f"{base}/v1/{amp}/click/offers/0", timeout=5)
        assert click.headers["location"] == f"https://shop.example.com/{variant}/kayak"
        # A slot that was not shown, a bad token, an expired one: the campaign's default link.
        assert httpx.get(f"{base}/v1/{amp}/click/offers/7", timeout=5).headers["location"] == DEFAULT
        assert httpx.get(f"{base}/v1/{amp}x/click/offers/0", timeout=5).headers["location"] == DEFAULT
        expired = signer.sign("abtest", recipient, now=int(time.time()) - 100, ttl_seconds=10)
        answer = httpx.get(f"{base}/v1/{expired}/click/offers/0", timeout=5)
        assert answer.status_code == 302 and answer.headers["location"] == DEFAULT
        unknown = httpx.get(f"{base}/v1/nonsense/click/offers/0", timeout=5)
        assert unknown.status_code == 200 and "no longer available" in unknown.text
        # The banner's click goes to the landing page of the colour it showed.
        html = token(signer, recipient, ttl_seconds=400 * 86400)
        colour = image_variant(httpx.get(f"{base}/v1/{html}/img/banner.png", timeout=5).content)
        click = httpx.get(f"{base}/v1/{html}/click/banner/0", timeout=5)
        assert click.headers["location"] == f"https://shop.example.com/banner/{colour}"


HOSTILE = [
    "//evil.example/x",
    "https://evil.example/",
    "https://shop.example.com@evil.example/",
    "https://shop.example.com.evil.example/",
    "https://evil.example\\@shop.example.com/",
    "https:/\\evil.example",
    "javascript:alert(1)",
    "http://shop.example.com/plain",
    "https://shop.example.com:8443/port",
    "https://user:pw@shop.example.com/",
    "https://shop.example.com/\r\nLocation: https://evil.example/",
    "https://shöp.example.com/",
    "%2F%2Fevil.example",
    "../../evil.example",
    "https://SHOP.example.com/upper",
    "ok-sku",
]


def _hostile(rng: random.Random) -> str:
    parts = [rng.choice(HOSTILE), rng.choice(["", "/", "?next=https://evil.example", "#x", "\t", "@", "%00"])]
    if rng.random() < 0.3:
        parts.append("".join(rng.choice("/\\@:.%?#evilshop") for _ in range(rng.randrange(1, 12))))
    return "".join(parts)


def test_no_click_ever_leaves_the_allowed_hosts(decided: Settings, signer: TokenSigner) -> None:
    rng = random.Random(14)
    rows = [
        (
            f"fuzz-{i}",
            orjson.dumps({"recommendations": [{"name": "x", "sku": _hostile(rng)} for _ in range(3)]}),
        )
        for i in range(60)
    ]
    load_rows(decided.database_url, rows)
    with TestClient(create_app(decided), base_url=BASE_URL, follow_redirects=False) as client:
        for recipient, _ in rows:
            amp = token(signer, recipient)
            opened = client.get(f"/v1/{amp}/list/offers.json", headers=AMP)
            assert opened.status_code == 200
            for slot in range(4):
                answer = client.get(f"/v1/{amp}/click/offers/{slot}")
                assert answer.status_code == 302, answer.text
                location = answer.headers["location"]
                url = httpx.URL(location)
                assert location == DEFAULT or (url.scheme == "https" and url.host == "shop.example.com")
                assert url.port is None and not url.userinfo
        # Whatever the path says, it names a block and a slot, never a target.
        amp = token(signer, rows[0][0])
        for path in ("click/offers/0?to=https://evil.example", "click/evil/0", "click/offers/99"):
            answer = client.get(f"/v1/{amp}/{path}")
            assert answer.status_code in (302, 404), path
            if answer.status_code == 302:
                assert httpx.URL(answer.headers["location"]).host in ("shop.example.com", "www.example.com")


@hsettings(max_examples=400, deadline=None)
@given(
    st.one_of(
        st.text(),
        st.builds(lambda a, b: a + b, st.sampled_from([*HOSTILE, "https://shop.example.com"]), st.text()),
    )
)
def test_safe_target_accepts_only_https_urls_on_an_allowed_host(url: str) -> None:
    if safe_target(url, frozenset({"shop.example.com"})):
        parsed = httpx.URL(url)
        assert parsed.scheme == "https" and parsed.host == "shop.example.com" and not parsed.userinfo
        assert parsed.port in (None, 443)


class Recorded:
    """An exposure sink that keeps what it is given (what the reports' recorder receives)."""

    def __init__(self) -> None:
        self.exposures: list[Exposure] = []

    def record(self, exposure: Exposure) -> None:
        self.exposures.append(exposure)


@pytest.fixture
def recording(decided: Settings) -> Iterator[tuple[TestClient, Recorded]]:
    with TestClient(create_app(decided), base_url=BASE_URL, follow_redirects=False) as client:
        sink = Recorded()
        # The sink is a Services field the reports' recorder fills in its lifespan; set here directly.
        object.__setattr__(client.app_state["services"], "exposures", sink)
        yield client, sink


def test_every_answered_open_and_click_is_offered_to_the_exposure_sink(
    recording: tuple[TestClient, Recorded], signer: TokenSigner
) -> None:
    client, sink = recording
    recipient = recipient_id(3)
    amp = token(signer, recipient)
    listed = client.get(f"/v1/{amp}/list/offers.json", headers={**AMP, **DIRECT, "CF-IPCountry": "DE"})
    variant = list_variant(listed.json())
    client.get(f"/v1/{amp}/img/banner.png", headers={"User-Agent": "Mozilla/5.0 GoogleImageProxy"})
    client.get(f"/v1/{amp}/click/offers/0")
    client.get("/v1/bad/list/offers.json", headers=AMP)  # names no campaign: nothing to attribute
    client.get(f"/v1/{amp}/list/hello.json", headers=AMP)  # no such block in abtest: its fallback
    opened, image, clicked, missing = sink.exposures
    assert (opened.block, opened.variant, opened.experiment) == ("offers", variant, "look")
    assert (opened.fetch_class, opened.outcome, opened.kind, opened.event) == ("direct", "ok", "list", "open")
    assert (image.fetch_class, image.variant, image.kind) == ("gmail-proxy", variant, "image")
    assert (clicked.event, clicked.kind, clicked.variant, clicked.outcome) == (
        "click",
        "click",
        variant,
        "ok",
    )
    assert (missing.variant, missing.outcome) == ("default", "unknown-block")
    assert all(e.campaign == "abtest" and recipient not in repr(e) for e in sink.exposures)


@pytest.mark.server
def test_with_redis_another_node_answers_the_click_with_what_this_one_showed(
    decided: Settings, tmp_path: Path, signer: TokenSigner, shared_redis: tuple[str, str]
) -> None:
    url, prefix = shared_redis
    recipient = "two-node-reader"
    load_rows(decided.database_url, [(recipient, profile_with("tent", "stove"))])
    shared = decided.replace(redis_url=url, redis_key_prefix=prefix)
    ports = [free_port(), free_port()]
    with ExitStack() as stack:
        for i, port in enumerate(ports):
            config = server_config(shared, port, tmp_path / f"n{i}.toml")
            stack.enter_context(running(["serve", "--config", str(config)], port, tmp_path / f"n{i}.log"))
        first, second = (f"http://127.0.0.1:{port}" for port in ports)
        amp = token(signer, recipient)
        shown = httpx.get(f"{first}/v1/{amp}/list/offers.json", headers=AMP, timeout=5).json()["items"]
        load_rows(decided.database_url, [(recipient, profile_with("kayak", "paddle"))])
        time.sleep(1.5)  # both nodes' caches have expired: only the record says "tent"
        click = httpx.get(f"{second}/v1/{amp}/click/offers/0", timeout=5)
        assert click.status_code == 302 and click.headers["location"] == shown[0]["url"]
        assert shown[0]["url"].endswith("/tent")


def _clicks_in(html: str) -> list[str]:
    """The offers' click URLs in a rendered HTML part, as paths (the test campaign links each item)."""
    hrefs = [part.split('"')[0] for part in html.split('href="')[1:]]
    return [h.removeprefix(BASE_URL) for h in hrefs if "/click/offers/" in h]


def test_a_click_in_the_html_part_goes_to_the_item_it_showed_when_sent(
    decided: Settings, recording: tuple[TestClient, Recorded], signer: TokenSigner
) -> None:
    """The HTML part shows send-time items for as long as the email lives; an open of the AMP part
    later (new data) must not change where those items' clicks go, nor may a seal be reused."""
    client, sink = recording
    recipient, other = recipient_id(5), recipient_id(6)
    load_rows(decided.database_url, [(recipient, profile_with("tent", "stove"))])
    sent = _sendtime(decided, signer).render("abtest", recipient, orjson.loads(profile_with("tent", "stove")))
    first, second = _clicks_in(sent.html)[:2]
    assert "?to=" in first and "tent" not in first  # the link travels sealed
    variant = sent.html.split("offers=")[1].split(" ")[0]
    # Later the data changes and the reader opens the AMP part: the open records the new items.
    load_rows(decided.database_url, [(recipient, profile_with("kayak", "paddle"))])
    amp = token(signer, recipient)
    time.sleep(1.1)  # the app's cache lives one second here
    opened = client.get(f"/v1/{amp}/list/offers.json", headers=AMP).json()["items"]
    assert [i["url"].rsplit("/", 1)[1] for i in opened] == ["kayak", "paddle"]
    # The HTML part's links lead where they showed; the AMP part's where it showed.
    assert client.get(first).headers["location"] == f"https://shop.example.com/{variant}/tent"
    assert client.get(second).headers["location"] == f"https://shop.example.com/{variant}/stove"
    assert client.get(f"/v1/{amp}/click/offers/0").headers["location"].endswith("/kayak")
    clicked = sink.exposures[-3]
    assert (clicked.event, clicked.variant, clicked.experiment) == ("click", variant, "look")
    # A seal is bound to its recipient and slot: moved, it is ignored (the open's record is used).
    path, seal = first.split("?to=")
    moved_slot = path.replace("/offers/0", "/offers/1") + "?to=" + seal
    assert client.get(moved_slot).headers["location"].endswith("/paddle")
    load_rows(decided.database_url, [(other, profile_with("lamp", "rope"))])
    other_path = path.replace(path.split("/")[2], token(signer, other))
    moved = client.get(other_path + "?to=" + seal).headers["location"]
    assert moved.endswith("/lamp")
    tampered = client.get(path + "?to=" + seal[:-3] + "AAA").headers["location"]
    assert tampered.endswith("/kayak")
    # Rendering the same send again makes the same seals: the email is deterministic.
    again = _sendtime(decided, signer).render(
        "abtest", recipient, orjson.loads(profile_with("tent", "stove"))
    )
    assert [c.split("?to=")[1] for c in _clicks_in(again.html)[:2]] == [
        first.split("?to=")[1],
        second.split("?to=")[1],
    ]
