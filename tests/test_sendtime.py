"""Send-time rendering of the shipped campaigns: parts, limits, MIME structure, template errors."""

from __future__ import annotations

import email
import email.policy
import random
import re
import time
from pathlib import Path

import pytest

from app.campaigns.loader import load_campaigns
from app.campaigns.sendtime import SendTime
from app.config import PROJECT_ROOT
from app.demo import demo_profile
from app.errors import CampaignError
from app.render.addresses import parse_mailbox
from app.render.email import EmailLimitError, EmailParts, amp_limit_problems, check_limits, to_message
from app.render.templates import TemplateError, Templates
from app.security.keyring import KeyRing
from app.security.tokens import TokenSigner, TokenVerifier

HOSTILE = '<script>alert("x")</script> \' " & 🎉 مرحبا'


def sendtime(signer: TokenSigner, templates_dir: Path = PROJECT_ROOT / "amp_templates") -> SendTime:
    campaigns = load_campaigns(
        templates_dir,
        PROJECT_ROOT / "static",
        default_budget_ms=150,
        public_base_url="https://amp.example.com",
    )
    return SendTime(Templates(templates_dir), campaigns, signer, "https://amp.example.com", time.time)


def token_of(part: str, url_end: str) -> str:
    """The token in the first URL of ``part`` that ends with ``url_end`` (e.g. "/list/picks.json")."""
    match = re.search(r"https://amp\.example\.com/v1/([^/]+)" + re.escape(url_end), part)
    assert match, url_end
    return match[1]


def test_demo_parts_carry_signed_urls_for_the_recipient(signer: TokenSigner, ring: KeyRing) -> None:
    parts = sendtime(signer).render("demo", "cust-0000007", demo_profile(random.Random(3)))
    verifier, now = TokenVerifier(ring), int(time.time())
    for token in (token_of(parts.amp, "/list/picks.json"), token_of(parts.html, "/view")):
        claims = verifier.verify(token, now=now)
        assert (claims.recipient, claims.campaign) == ("cust-0000007", "demo")
    assert "{{#price}}" in parts.amp and "{{name}}" in parts.amp  # amp-mustache survives Jinja
    assert parts.subject.endswith("your picks for this week")


def test_token_lifetimes_by_purpose(signer: TokenSigner, ring: KeyRing) -> None:
    """AMP-part URLs live as long as Gmail shows AMP; what the HTML part shows, the campaign's lifetime."""
    parts = sendtime(signer).render("demo", "cust-0000007", demo_profile(random.Random(3)))
    verifier, now = TokenVerifier(ring), int(time.time())

    def days_left(token: str) -> float:
        expires_at = verifier.verify(token, now=now).expires_at
        assert expires_at is not None
        return (expires_at - now) / 86400

    amp_days = days_left(token_of(parts.amp, "/list/picks.json"))
    assert 30 < amp_days <= 31
    for part, url_end in (
        (parts.html, "/view"),
        (parts.html, "/img/banner@2x.png"),
        (parts.amp, "/img/banner@2x.png"),
    ):
        assert 399 < days_left(token_of(part, url_end)) <= 400  # demo: the 400-day default
    timer = token_of(parts.html, "/img/countdown.gif")
    assert verifier.verify(timer, now=now).recipient is None  # campaign-wide: one CDN copy for everyone
    assert 399 < days_left(timer) <= 400


def test_a_campaign_sets_its_html_lifetime(tmp_path: Path, signer: TokenSigner, ring: KeyRing) -> None:
    folder = tmp_path / "short"
    folder.mkdir()
    (folder / "blocks.toml").write_text("[campaign]\nhtml_lifetime_days = 90\n")
    for part in ("email.txt", "email.html", "email.amp.html"):
        (folder / part).write_text("{{ urls.view }}\n")
    campaign = load_campaigns(
        tmp_path, PROJECT_ROOT / "static", public_base_url="https://amp.example.com", default_budget_ms=150
    )["short"]
    assert campaign.html_lifetime_days == 90
    (folder / "blocks.toml").write_text("[campaign]\nhtml_lifetime_days = 0\n")
    with pytest.raises(CampaignError, match="html_lifetime_days: expected an integer from 1 to 3650"):
        load_campaigns(
            tmp_path,
            PROJECT_ROOT / "static",
            public_base_url="https://amp.example.com",
            default_budget_ms=150,
        )


def test_unknown_recipient_renders_with_fallback_content(signer: TokenSigner) -> None:
    parts = sendtime(signer).render("demo", "nobody", None)
    assert parts.subject == "Hello, your picks for this week"
    assert "Bestsellers of the week" in parts.html and "Hi there!" in parts.text


def test_hostile_data_is_escaped_in_html_and_amp(signer: TokenSigner) -> None:
    profile = {
        "first_name": HOSTILE,
        "recommendations": [{"name": HOSTILE, "price": 1, "sku": "x", "image": "y.jpg"}],
    }
    parts = sendtime(signer).render("demo", "cust-1", profile)
    for markup in (parts.amp, parts.html):
        assert "<script>" not in markup
        assert "&lt;script&gt;" in markup
    assert "\n" not in parts.subject and "<script>" in parts.subject  # subject is plain text
    assert HOSTILE in parts.text


def test_mime_message_orders_parts_and_round_trips(signer: TokenSigner) -> None:
    parts = sendtime(signer).render("demo", "cust-1", {"first_name": "Zoë 🎉"})
    sender, to = parse_mailbox("Shop <news@example.com>"), parse_mailbox("ada@example.org")
    raw = to_message(parts, sender=sender, to=to, now=time.time()).as_bytes()
    parsed = email.message_from_bytes(raw, policy=email.policy.default)
    assert parsed.get_content_type() == "multipart/alternative"
    kinds = [p.get_content_type() for p in parsed.iter_parts()]
    assert kinds == ["text/plain", "text/x-amp-html", "text/html"]
    for part, expected in zip(parsed.iter_parts(), (parts.text, parts.amp, parts.html), strict=True):
        assert part.get_content_charset() == "utf-8"
        assert part["Content-Transfer-Encoding"] == "quoted-printable"
        assert part.get_content().replace("\r\n", "\n") == expected.replace("\r\n", "\n")
    assert parsed["Subject"] == "Zoë 🎉, your picks for this week"
    assert all(len(line) <= 998 for line in raw.split(b"\r\n"))


def test_limits_are_precise() -> None:
    big_style = "color:red;" * 101
    amp = f'<style amp-custom>{"a{color:red}" * 7000}</style><p style="{big_style}">x</p>' + "x" * 200_000
    problems = amp_limit_problems(amp)
    assert any(p.startswith("AMP part is") and "over the 200000-byte limit" in p for p in problems)
    assert any(p.startswith("AMP CSS is 85010 bytes, 10010 over") for p in problems)
    assert "inline style #1 is 1010 bytes, 10 over the 1000-byte limit" in problems
    assert amp_limit_problems("<style amp-custom>a{color:red !important}</style>") == [
        "AMP CSS uses !important, which AMP for Email forbids"
    ]
    with pytest.raises(EmailLimitError, match="inline style #1"):
        check_limits(EmailParts("s", "t", f'<p style="{big_style}"></p>', "h"))


def test_large_html_part_only_warns() -> None:
    checked = check_limits(EmailParts("s", "t", "<p>amp</p>", "x" * 110_000))
    assert checked.warnings and "Gmail clips" in checked.warnings[0]


def test_template_typo_names_file_and_line(signer: TokenSigner, tmp_path: Path) -> None:
    folder = tmp_path / "demo"
    folder.mkdir()
    for name in ("blocks.toml", "email.amp.html", "email.txt"):
        (folder / name).write_text((PROJECT_ROOT / "amp_templates" / "demo" / name).read_text())
    (folder / "email.html").write_text("<p>line one</p>\n<p>{{ profil.first_name }}</p>\n")
    with pytest.raises(TemplateError, match=r"demo/email.html, line 2: 'profil' is undefined"):
        sendtime(signer, tmp_path).render("demo", "cust-1", {})


def test_unknown_campaign_is_a_clear_error(signer: TokenSigner) -> None:
    with pytest.raises(CampaignError, match="unknown campaign 'nope'"):
        sendtime(signer).render("nope", "cust-1", {})


def test_formatted_filter_writes_values_as_the_json_does(signer: TokenSigner, tmp_path: Path) -> None:
    folder = tmp_path / "demo"
    folder.mkdir()
    for name in ("blocks.toml", "email.amp.html", "email.txt"):
        (folder / name).write_text((PROJECT_ROOT / "amp_templates" / "demo" / name).read_text())
    (folder / "email.html").write_text(
        '<p>{{ profile.loyalty.points | formatted("number") }} / {{ 19.5 | formatted("currency:USD") }}'
        ' / {{ profile.loyalty.expires_at | formatted("date") }} / {{ profile.note | formatted("number") }}'
        ' / {{ blocks.hello["items"][0].points }}</p>\n'
    )
    profile = {"loyalty": {"points": 4514, "expires_at": "2027-12-31T23:30:00Z"}, "note": "<n/a>"}
    html = sendtime(signer, tmp_path).render("demo", "cust-1", profile).html
    # The campaign's zone (America/New_York); text a format cannot read is shown as is, escaped.
    assert html == "<p>4,514 / $19.50 / December 31, 2027 / &lt;n/a&gt; / 4,514</p>\n"
    tokyo = sendtime(signer, tmp_path).render("demo", "cust-1", {**profile, "zone": "Asia/Tokyo"}).html
    assert "January 1, 2028" in tokyo


def test_formatted_filter_with_a_bad_spec_names_file_and_line(signer: TokenSigner, tmp_path: Path) -> None:
    folder = tmp_path / "demo"
    folder.mkdir()
    for name in ("blocks.toml", "email.amp.html", "email.txt"):
        (folder / name).write_text((PROJECT_ROOT / "amp_templates" / "demo" / name).read_text())
    (folder / "email.html").write_text('<p>\n{{ 3 | formatted("money") }}</p>\n')
    with pytest.raises(TemplateError, match=r"demo/email.html, line 2: unknown format 'money'"):
        sendtime(signer, tmp_path).render("demo", "cust-1", {})
