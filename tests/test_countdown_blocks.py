"""``countdown`` blocks in blocks.toml: parsing, load-time checks, deadlines from the profile, URLs."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from app.campaigns.urls import Tokens, campaign_urls, template_urls
from app.countdown.clock import DeadlineError
from app.errors import CampaignError
from app.security.keyring import Key, KeyRing
from app.security.tokens import TokenVerifier
from tests.test_golden import fixed_sendtime, profile
from tests.test_images_helpers import STATIC, campaign, decode

SHARED = """
[blocks.sale]
kind = "countdown"
deadline = "2026-12-24T18:00"
zone = "Europe/Berlin"
"""
PERSONAL = """
[blocks.mine]
kind = "countdown"
deadline_field = "offer.ends_at"
zone_field = "offer.zone"
zone = "Europe/Berlin"
frames = 5
width = 400
height = 100
digit_size = 40
label_size = 12
expired_size = 24
"""


def test_shared_block_defaults(tmp_path: Path) -> None:
    block = campaign(tmp_path, SHARED).countdowns["sale"]
    assert block.shared and block.fixed == datetime(2026, 12, 24, 17, 0, tzinfo=UTC)
    assert block.deadline() == datetime(2026, 12, 24, 17, 0, tzinfo=UTC)
    assert block.styles[1].font_path == str(STATIC.resolve() / "fonts/DejaVuSans-Bold.ttf")
    assert (block.styles[1].width, block.styles[2].width, block.styles[2].digit_size) == (600, 1200, 128)
    assert decode(block.fallbacks["gif", 2]).size == (1200, 240)
    assert decode(block.fallbacks["jpg", 1]).size == (600, 120)


def test_deadline_from_a_dotted_profile_field_and_zone(tmp_path: Path) -> None:
    block = campaign(tmp_path, PERSONAL).countdowns["mine"]
    assert not block.shared and block.styles[1].frame_count == 5
    offer = {"ends_at": "2026-07-01T09:00"}
    assert block.deadline({"offer": offer}) == datetime(2026, 7, 1, 7, 0, tzinfo=UTC)  # CEST
    ny = {"offer": {**offer, "zone": "America/New_York"}}
    assert block.deadline(ny) == datetime(2026, 7, 1, 13, 0, tzinfo=UTC)  # EDT
    with pytest.raises(DeadlineError, match=r"offer\.ends_at"):
        block.deadline({"offer": {}})


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ('deadline_field = "x"', "exactly one of deadline"),
        ('zone_field = "tz"', "zone_field only applies with deadline_field"),
        (
            "bucket_seconds = 60",
            "bucket_seconds: no longer used .a countdown is drawn for every second.: remove it",
        ),
        ('wobble = "x"', "unknown key"),
        ("digit_size = 119", "need 122px of height, the image has 120px"),  # checked by loading the glyphs
        ("width = 900", r"width must be a whole number from 100 to 1600, got 1800 \(at @2x\)"),
        ('background = "#11223344"', "must be opaque"),
        ('labels = ["D", "H"]', "four strings"),
        ('font = "comic"', "font: expected one of regular, bold"),
        ('fallback = "../app/app.py"', "outside the static folder"),
        ("frames = 0", "frames: expected an integer from 1 to 120"),
    ],
)
def test_mistakes_name_the_file_and_block(tmp_path: Path, extra: str, message: str) -> None:
    with pytest.raises(CampaignError, match=message) as caught:
        campaign(tmp_path, SHARED + extra + "\n")
    assert "blocks.toml [blocks.sale]" in str(caught.value)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ('[blocks.t]\nkind = "countdown"\nzone = "Europe/Berlin"\n', "exactly one of deadline"),
        ('[blocks.t]\nkind = "countdown"\ndeadline = "2026-12-24T18:00"\n', "no time zone"),
        ('[blocks.t]\nkind = "countdown"\ndeadline = "2026-13-45T18:00"\nzone = "UTC"\n', "not an ISO 8601"),
        ('[blocks.t]\nkind = "countdown"\ndeadline = "2026-12-24T18:00"\nzone = "Mars/Base"\n', "time zone"),
    ],
)
def test_deadline_mistakes(tmp_path: Path, spec: str, message: str) -> None:
    with pytest.raises(CampaignError, match=message):
        campaign(tmp_path, spec)


def test_urls_give_shared_timers_the_shared_token(tmp_path: Path) -> None:
    both = campaign(tmp_path, SHARED + PERSONAL)
    urls = template_urls("https://x.test", Tokens("amp", "tok", "shr"), both)
    assert urls["countdown"] == {
        "sale": "https://x.test/v1/shr/img/sale.gif",
        "mine": "https://x.test/v1/tok/img/mine.gif",
    }
    assert urls["countdown2x"]["sale"] == "https://x.test/v1/shr/img/sale@2x.gif"
    assert (
        template_urls("https://x.test", Tokens("amp", "tok"), both)["countdown"]["sale"]
        == "https://x.test/v1/tok/img/sale.gif"
    )
    exported = campaign_urls("https://x.test", Tokens("amp", "tok", "shr"), both)
    assert exported["countdown:sale"].endswith("/shr/img/sale.gif")


def test_send_time_signs_one_campaign_wide_token_for_shared_timers() -> None:
    sendtime = fixed_sendtime()
    context = sendtime.context(sendtime.campaign("demo"), "cust-1", profile())
    url = context["urls"]["countdown"]["countdown"]
    token = url.split("/")[-3]
    key = Key(kid="0a1b2c", created=datetime(2030, 1, 1, tzinfo=UTC), secret=bytes(range(32)))  # as golden
    claims = TokenVerifier(KeyRing([key])).verify(token, now=int(sendtime.clock()))
    assert claims.recipient is None and claims.campaign == "demo"
    assert "cust-1" not in url and context["urls"]["img"]["banner"].split("/")[-3] != token
