"""The example campaigns ``cart-recovery`` and ``weekly-picks``: rendered parts, fragments and forms.

Rendering runs on a fixed clock so tokens, URLs and subject lines are reproducible. Fragments and form
submissions go through the full app (``create_app``) on a SQLite store holding the demo recipients
plus the rows below.
"""

from __future__ import annotations

import random
import re
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
from starlette.testclient import TestClient

from app.app import create_app
from app.campaigns.loader import load_campaigns
from app.campaigns.sendtime import SendTime
from app.config import PROJECT_ROOT, Settings
from app.demo import demo_profile, recipient_id
from app.render.email import EmailParts
from app.render.templates import Templates
from app.security.tokens import TokenSigner
from app.services import Services
from tests.conftest import BASE_URL, SENDER, load_rows
from tests.test_shipped_campaigns_valid import hostile

CAMPAIGNS = load_campaigns(
    PROJECT_ROOT / "amp_templates", PROJECT_ROOT / "static", default_budget_ms=150, public_base_url=BASE_URL
)
TEMPLATES = Templates(PROJECT_ROOT / "amp_templates")
SENT_AT = datetime(2025, 3, 7, 9, 30, tzinfo=UTC).timestamp()
FORM_HEADERS = {"AMP-Email-Sender": SENDER, "Content-Type": "application/x-www-form-urlencoded"}

CART = {
    "first_name": "Ada",
    "cart": {
        "items": [
            {
                "name": "Trail running shoes",
                "price": 129.0,
                "qty": 1,
                "sku": "sku-0000",
                "image": "sku-0000.jpg",
            },
            {
                "name": "Merino wool socks",
                "price": 19.5,
                "qty": 3,
                "sku": "sku-0001",
                "image": "sku-0001.jpg",
            },
        ]
    },
}
PICKS = {
    "first_name": "Grace",
    "recommendations": [
        {"name": "Insulated bottle", "price": 34.0, "sku": "sku-0002", "image": "sku-0002.jpg"},
        {"name": "Headlamp 400 lm", "price": 45.0, "sku": "sku-0004", "image": "sku-0004.jpg"},
        {"name": "Camp mug", "price": 14.0, "sku": "sku-0006"},
    ],
    "preferences": {"topics": ["hiking", "camping"], "frequency": "monthly"},
}


@pytest.fixture
def sendtime(signer: TokenSigner) -> SendTime:
    return SendTime(TEMPLATES, CAMPAIGNS, signer, BASE_URL, lambda: SENT_AT)


def render(sendtime: SendTime, campaign: str, profile: dict[str, Any] | None) -> tuple[EmailParts, Any]:
    """The parts and the URLs they must carry (same fixed clock, so the same token)."""
    parts = sendtime.render(campaign, "r-1", profile)
    urls = sendtime.context(CAMPAIGNS[campaign], "r-1", profile)["urls"]
    return parts, urls


def options(amp: str, name: str) -> list[str]:
    """The values an AMP form offers for field ``name`` (radio inputs or amp-selector options)."""
    radios = re.findall(rf'<input type="radio" name="{name}" value="([^"]*)"', amp)
    selector = re.search(rf'<amp-selector[^>]* name="{name}"[^>]*>(.*?)</amp-selector>', amp, re.S)
    return radios or re.findall(r'option="([^"]*)"', selector.group(1) if selector else "")


def without_templates(amp: str) -> str:
    """The AMP part as a reader sees it before any fetch: amp-mustache templates removed."""
    return re.sub(r"<template .*?</template>", "", amp, flags=re.S)


def selected(amp: str, name: str) -> list[str]:
    selector = re.search(rf'<amp-selector[^>]* name="{name}"[^>]*>(.*?)</amp-selector>', amp, re.S)
    assert selector is not None
    return re.findall(r'option="([^"]*)" selected', selector.group(1))


# -- cart-recovery: rendered parts -----------------------------------------------------------------


def test_cart_recovery_shows_the_cart_in_every_part(sendtime: SendTime) -> None:
    parts, urls = render(sendtime, "cart-recovery", CART)
    assert parts.subject == "Ada, you left something in your cart"
    assert str(CAMPAIGNS["cart-recovery"].sender) == "Example Outfitters <news@example.com>"
    for part in (parts.amp, parts.html, parts.text):
        assert "Hi Ada" in part
        assert "Trail running shoes" in part and "Merino wool socks" in part
        assert "$129.00" in part and "$19.50" in part
        assert "https://shop.example.com/p/sku-0001" in part
        assert "https://shop.example.com/cart" in part
        assert urls["view"] in part
    assert "Qty 3" in parts.amp and "Qty 3" in parts.html and "(qty 3)" in parts.text
    assert 'src="https://cdn.example.com/img/sku-0000.jpg"' in parts.html
    # AMP: live list with the snapshot as fallback, mustache untouched, the feedback form wired up.
    assert f'src="{urls["list"]["cart"]}"' in parts.amp
    assert "<div fallback>" in parts.amp and "<div placeholder>" in parts.amp
    assert "{{#qty}}" in parts.amp and 'href="{{url}}"' in parts.amp
    assert f'method="post" action-xhr="{urls["form"]["feedback"]}"' in parts.amp
    assert "{{message}}" in parts.amp and "{{error}}" in parts.amp
    amp_token = urls["list"]["cart"].split("/")[-3]  # forms and lists share the AMP-lifetime token
    assert urls["form"]["feedback"] == f"{BASE_URL}/v1/{amp_token}/form/feedback"


def test_cart_recovery_without_a_cart_shows_the_static_fallback(sendtime: SendTime) -> None:
    for profile in ({}, None, {"first_name": "", "cart": {"items": []}}):
        parts, urls = render(sendtime, "cart-recovery", profile)
        assert parts.subject == "Hey, you left something in your cart"
        for part in (without_templates(parts.amp), parts.html, parts.text):
            assert "Hi there" in part and "Your saved cart" in part
            assert "Qty" not in part and "(qty" not in part and "$" not in part
            assert urls["view"] in part


def test_cart_recovery_form_offers_exactly_the_declared_reasons(sendtime: SendTime) -> None:
    parts, _ = render(sendtime, "cart-recovery", CART)
    declared = {f.name: f for f in CAMPAIGNS["cart-recovery"].forms["feedback"].fields}
    assert options(parts.amp, "reason") == list(declared["reason"].choices)
    assert '<textarea name="comment"' in parts.amp and 'maxlength="500"' in parts.amp
    assert declared["comment"].max_length == 500


# -- weekly-picks: rendered parts ------------------------------------------------------------------


def test_weekly_picks_shows_the_picks_and_current_preferences(sendtime: SendTime) -> None:
    parts, urls = render(sendtime, "weekly-picks", PICKS)
    assert parts.subject == "Grace, your picks for the week of March 7"
    for part in (parts.amp, parts.html, parts.text):
        assert "Hi Grace" in part and "March 7" in part
        assert "Insulated bottle" in part and "Camp mug" in part
        assert "$34.00" in part and "$14.00" in part
        assert "https://shop.example.com/p/sku-0004" in part
        assert urls["view"] in part
    assert "Hiking, Camping, once a month" in parts.html and "Hiking, Camping, once a month" in parts.text
    assert f'src="{urls["list"]["recommendations"]}"' in parts.amp
    assert "{{#items}}" in parts.amp and 'src="{{image}}"' in parts.amp
    assert f'method="post" action-xhr="{urls["form"]["preferences"]}"' in parts.amp
    assert "{{message}}" in parts.amp and "{{error}}" in parts.amp
    assert selected(parts.amp, "topics") == ["hiking", "camping"]
    assert selected(parts.amp, "frequency") == ["monthly"]


def test_weekly_picks_without_data_shows_editors_picks_and_defaults(sendtime: SendTime) -> None:
    for profile in ({}, None, {"preferences": {"topics": "hiking", "frequency": "hourly"}}):
        parts, urls = render(sendtime, "weekly-picks", profile)
        assert parts.subject == "Hi, your picks for the week of March 7"
        for part in (parts.amp, parts.html, parts.text):
            assert "Bestsellers of the week" in part and "https://shop.example.com/bestsellers" in part
            assert urls["view"] in part
        assert "editors' picks every week" in parts.text
        assert selected(parts.amp, "topics") == []
        assert selected(parts.amp, "frequency") == ["weekly"]  # always one, so a submit is valid


def test_weekly_picks_form_offers_exactly_the_declared_choices(sendtime: SendTime) -> None:
    parts, _ = render(sendtime, "weekly-picks", PICKS)
    declared = {f.name: f for f in CAMPAIGNS["weekly-picks"].forms["preferences"].fields}
    assert options(parts.amp, "topics") == list(declared["topics"].choices)
    assert options(parts.amp, "frequency") == list(declared["frequency"].choices)
    assert declared["topics"].multiple and not declared["frequency"].multiple


@pytest.mark.parametrize("campaign", ["cart-recovery", "weekly-picks"])
def test_hostile_profile_data_stays_escaped(sendtime: SendTime, campaign: str) -> None:
    profile = hostile({**CART, **PICKS})
    parts, _ = render(sendtime, campaign, profile)
    for part in (parts.amp, parts.html):
        assert "<script>" not in part and "&lt;script&gt;" in part
        assert 'href="https://shop.example.com/p/%3Cscript%3E' in part  # URLs percent-encoded
    assert "\n" not in parts.subject


# -- through the app: fragments, list JSON, forms, web view ----------------------------------------

CART_ROWS = [("cart-1", orjson.dumps(CART)), ("cart-2", orjson.dumps({"first_name": "Alan"}))]


@pytest.fixture
def app_client(settings: Settings) -> Iterator[TestClient]:
    load_rows(settings.database_url, CART_ROWS)
    with TestClient(create_app(settings), base_url=BASE_URL, follow_redirects=False) as test_client:
        yield test_client


def token(signer: TokenSigner, campaign: str, recipient: str) -> str:
    return signer.sign(campaign, recipient, now=int(time.time()))


def stored_profile(client: TestClient, recipient: str) -> dict[str, Any]:
    services: Services = client.app_state["services"]
    assert client.portal is not None
    profile = client.portal.call(services.store.profiles.get, recipient)
    assert profile is not None
    found: dict[str, Any] = orjson.loads(profile.attributes)
    return found


def test_cart_fragment_and_list_for_a_recipient(app_client: TestClient, signer: TokenSigner) -> None:
    cart = token(signer, "cart-recovery", "cart-1")
    fragment = app_client.get(f"/v1/{cart}/html/cart")
    assert fragment.status_code == 200
    assert "x-opentime-fallback" not in fragment.headers
    assert fragment.text.count('href="https://shop.example.com/p/sku-000') == 4  # 2 items, image + name
    assert "Merino wool socks" in fragment.text and "$19.50" in fragment.text and "Qty 3" in fragment.text
    listed = app_client.get(f"/v1/{cart}/list/cart.json", headers={"AMP-Email-Sender": SENDER})
    assert listed.json()["items"][1] == {  # values as the reader sees them (the block's formats)
        "name": "Merino wool socks",
        "price": "$19.50",
        "qty": "3",
        "url": "https://shop.example.com/p/sku-0001",
        "image": "https://cdn.example.com/img/sku-0001.jpg",
    }


def test_cart_fragment_falls_back_without_a_cart(app_client: TestClient, signer: TokenSigner) -> None:
    for recipient, reason in (("cart-2", "no-data"), ("ghost", "unknown-recipient")):
        response = app_client.get(f"/v1/{token(signer, 'cart-recovery', recipient)}/html/cart")
        assert response.status_code == 200
        assert "Your saved cart" in response.text and "https://shop.example.com/cart" in response.text
        assert "Qty" not in response.text
        assert response.headers["x-opentime-fallback"] == reason


def test_recommendations_fragment_for_a_demo_recipient(app_client: TestClient, signer: TokenSigner) -> None:
    response = app_client.get(f"/v1/{token(signer, 'weekly-picks', recipient_id(1))}/html/recommendations")
    assert response.status_code == 200
    assert "x-opentime-fallback" not in response.headers
    assert response.text.count('href="https://shop.example.com/p/sku-') == 4
    expected = demo_profile(random.Random(7))["recommendations"]  # demo_rows(seed=7): recipient 1
    assert all(pick["name"] in response.text for pick in expected)
    unknown = app_client.get(f"/v1/{token(signer, 'weekly-picks', 'ghost')}/html/recommendations")
    assert "Bestsellers of the week" in unknown.text


def test_cart_feedback_form_updates_the_profile(app_client: TestClient, signer: TokenSigner) -> None:
    path = f"/v1/{token(signer, 'cart-recovery', 'cart-1')}/form/feedback"
    response = app_client.post(path, content="reason=shipping&comment=Too+slow", headers=FORM_HEADERS)
    assert response.status_code == 200
    assert response.headers["amp-email-allow-sender"] == SENDER
    body = response.json()
    assert body["message"] == CAMPAIGNS["cart-recovery"].forms["feedback"].success_message
    assert body["submitted"] == {"reason": "shipping", "comment": "Too slow"}
    profile = stored_profile(app_client, "cart-1")
    assert profile["preferences"] == {"cart_feedback": "shipping"}
    assert profile["cart"] == CART["cart"]  # the rest of the profile is untouched
    bad = app_client.post(path, content="reason=too-expensive", headers=FORM_HEADERS)
    assert bad.status_code == 400 and "reason" in bad.json()["fields"]
    assert stored_profile(app_client, "cart-1")["preferences"] == {"cart_feedback": "shipping"}


def test_preferences_form_updates_the_profile_and_the_next_view(
    app_client: TestClient, signer: TokenSigner
) -> None:
    picks = token(signer, "weekly-picks", recipient_id(2))
    body = "topics=cycling&topics=running&frequency=biweekly&__amp_source_origin=x"
    response = app_client.post(f"/v1/{picks}/form/preferences", content=body, headers=FORM_HEADERS)
    assert response.status_code == 200
    assert response.json()["message"] == CAMPAIGNS["weekly-picks"].forms["preferences"].success_message
    profile = stored_profile(app_client, recipient_id(2))
    assert profile["preferences"] == {"topics": ["running", "cycling"], "frequency": "biweekly"}
    assert len(profile["recommendations"]) == 4
    view = app_client.get(f"/v1/{picks}/view")
    assert "Running, Cycling, every two weeks" in view.text
    # No topic at all is a valid answer ("no preference"); a missing frequency is not.
    cleared = app_client.post(
        f"/v1/{picks}/form/preferences", content="frequency=weekly", headers=FORM_HEADERS
    )
    assert cleared.status_code == 200
    assert stored_profile(app_client, recipient_id(2))["preferences"] == {"topics": [], "frequency": "weekly"}
    missing = app_client.post(f"/v1/{picks}/form/preferences", content="topics=hiking", headers=FORM_HEADERS)
    assert missing.status_code == 400 and "frequency" in missing.json()["fields"]
