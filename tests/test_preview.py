"""The preview report (``app.campaigns.preview``) as functions, and ``opentime preview`` via CliRunner."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest
from click.testing import CliRunner

from app.campaigns.preview import build_report, parse_at, profile_attributes, validate
from app.campaigns.sendtime import SendTime
from app.campaigns.urls import sending_base_url
from app.campaigns.validator import AmpValidator
from app.cli.preview import preview
from app.config import Settings
from app.demo import demo_rows, recipient_id
from app.security.tokens import TokenSigner
from app.services import load_campaigns_for, load_templates
from app.store.base import Profile
from tests.conftest import BASE_URL, insecure_demo

NOW = 1_750_000_000.0
AT = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)


def sendtime_for(settings: Settings, signer: TokenSigner) -> SendTime:
    campaigns = load_campaigns_for(settings)
    return SendTime(load_templates(settings, campaigns), campaigns, signer, BASE_URL, lambda: NOW)


def attributes_of(recipient: str) -> dict[str, object]:
    data: dict[str, object] = orjson.loads(dict(demo_rows(5))[recipient])
    return data


# -- pure parts ------------------------------------------------------------------------------------


def test_parse_at() -> None:
    assert parse_at(None, NOW) == datetime.fromtimestamp(NOW, UTC)
    assert parse_at(" ", NOW + 0.7) == datetime.fromtimestamp(NOW, UTC)
    assert parse_at("2030-01-02T03:04:05Z", NOW) == AT
    assert parse_at("2030-01-02T03:04:05", NOW) == AT  # no offset: UTC
    assert parse_at("2030-01-02T05:04:05+02:00", NOW) == AT
    assert parse_at("2030-01-02T05:04:05+02:00", NOW).tzinfo is UTC
    for bad in ("tomorrow", "2030-02-30", "1700000000"):
        with pytest.raises(ValueError, match="ISO 8601"):
            parse_at(bad, NOW)
    # Valid ISO 8601 that overflows when moved to UTC: OverflowError used to escape as a 500.
    for bad in ("0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00"):
        with pytest.raises(ValueError, match="outside the years 1 to 9999"):
            parse_at(bad, NOW)


def test_profile_attributes() -> None:
    def profile(attributes: bytes) -> Profile:
        return Profile("a", attributes, version=1, updated_at=NOW)

    assert profile_attributes(None) == (None, "unknown-recipient")
    assert profile_attributes(profile(b"[1]")) == (None, "bad-profile")
    assert profile_attributes(profile(b"{nope")) == (None, "bad-profile")
    assert profile_attributes(profile(b'{"x": 1}')) == ({"x": 1}, None)


def test_report_parts_are_what_send_time_rendering_sends(settings: Settings, signer: TokenSigner) -> None:
    sendtime = sendtime_for(settings, signer)
    rid = recipient_id(1)
    report = build_report(sendtime, sendtime.campaign("demo"), rid, attributes_of(rid), None, at=AT)
    assert report.parts == sendtime.render("demo", rid, attributes_of(rid), at=AT.timestamp())
    assert report.problems == ()
    assert [row[0] for row in report.part_rows()] == ["text", "amp", "html"]
    assert [(b.name, b.fallback_reason, b.fragment is not None) for b in report.blocks] == [
        ("hello", None, False),
        ("picks", None, True),
    ]
    assert report.blocks[1].items[0]["url"].startswith("https://shop.example.com/p/sku-")
    assert report.blocks[1].json.startswith('{\n  "items": [')


def test_the_amp_part_is_validated_as_sent(settings: Settings, signer: TokenSigner) -> None:
    rid = recipient_id(1)
    https = sendtime_for(settings, signer)
    report = build_report(https, https.campaign("demo"), rid, attributes_of(rid), None, at=AT)
    assert report.parts is not None and report.sent_amp == report.parts.amp
    assert (report.base_url, report.sent_base_url, report.placeholder_origin) == (BASE_URL, BASE_URL, False)
    # An http base (localhost): the parts shown keep it, the AMP part validated gets the placeholder.
    local = replace(https, base_url="http://127.0.0.1:8000")
    report = build_report(local, local.campaign("demo"), rid, attributes_of(rid), None, at=AT)
    assert report.parts is not None and report.sent_amp is not None
    assert report.placeholder_origin and report.sent_base_url == "https://amp.example.com"
    assert "http://127.0.0.1:8000/v1/" in report.parts.amp and "http://" not in report.parts.amp.replace(
        "http://127.0.0.1:8000/", ""
    )
    assert "127.0.0.1" not in report.sent_amp
    assert report.sent_amp == report.parts.amp.replace("http://127.0.0.1:8000/", "https://amp.example.com/")


def test_sending_base_url() -> None:
    assert sending_base_url("https://cdn.example.com/amp") == "https://cdn.example.com/amp"
    assert sending_base_url("http://127.0.0.1:8000") == "https://amp.example.com"
    assert sending_base_url("http://localhost:8000/amp") == "https://amp.example.com/amp"


def test_blocks_fall_back_with_the_reason(settings: Settings, signer: TokenSigner) -> None:
    sendtime = sendtime_for(settings, signer)
    demo = sendtime.campaign("demo")
    partial = build_report(sendtime, demo, "a", {"first_name": "Ada"}, None, at=AT)
    assert [(b.name, b.fallback_reason) for b in partial.blocks] == [("hello", None), ("picks", "no-data")]
    unknown = build_report(sendtime, demo, "ghost", None, "unknown-recipient", at=AT)
    assert {b.fallback_reason for b in unknown.blocks} == {"unknown-recipient"}
    assert "Bestsellers of the week" in (unknown.blocks[1].fragment or "")


def write_campaign(root: Path, amp: str, html: str = "<p>{{ profile.name }}</p>") -> Settings:
    folder = root / "templates" / "probe"
    folder.mkdir(parents=True)
    (root / "static").mkdir()
    (folder / "blocks.toml").write_text('[campaign]\nsubject = "Hi {{ profile.name }}"\n')
    (folder / "email.txt").write_text("Hi {{ profile.name }}\n")
    (folder / "email.amp.html").write_text(amp)
    (folder / "email.html").write_text(html)
    return Settings(
        public_base_url=BASE_URL,
        keys_file=root / "keys.json",
        allowed_senders=("news@example.com",),
        templates_dir=root / "templates",
        static_dir=root / "static",
    )


def test_parts_over_a_limit_are_kept_for_display(tmp_path: Path, signer: TokenSigner) -> None:
    settings = write_campaign(tmp_path, "<p>{{ profile.blob }}</p>")
    sendtime = sendtime_for(settings, signer)
    attributes = {"name": "A", "blob": "x" * 200_001}
    report = build_report(sendtime, sendtime.campaign("probe"), "a", attributes, None, at=AT)
    assert report.parts is not None and report.parts.subject == "Hi A"
    assert report.problems == ("AMP part is 200008 bytes, 8 over the 200000-byte limit",)
    assert report.part_rows()[1] == ("amp", 200_008, 200_000, "over the limit: rejected by Gmail")


def test_template_errors_are_reported_not_raised(tmp_path: Path, signer: TokenSigner) -> None:
    settings = write_campaign(tmp_path, "<p>ok</p>", html="<p>\n{{ profile.name.first }}</p>")
    sendtime = sendtime_for(settings, signer)
    report = build_report(sendtime, sendtime.campaign("probe"), "a", {"name": "A"}, None, at=AT)
    assert report.parts is None and report.part_rows() == []
    assert len(report.problems) == 1 and report.problems[0].startswith("probe/email.html, line 2:")


def test_validate_without_validator_or_amp_part(tmp_path: Path) -> None:
    assert validate(None, "<html>").status == "UNAVAILABLE"
    assert "install-amp-validator.sh" in validate(None, "<html>").note
    assert validate(None, None).status == "SKIPPED"
    absent = AmpValidator("node", tmp_path / "absent")
    assert validate(absent, "<html>").status == "UNAVAILABLE"


def test_validate_reports_a_crashing_validator(tmp_path: Path) -> None:
    tools = tmp_path / "tools"
    (tools / "node_modules" / "amphtml-validator").mkdir(parents=True)
    (tools / "validator_wasm.js").write_text("")
    (tools / "node_modules" / "amphtml-validator" / "index.js").write_text("")
    verdict = validate(AmpValidator("/bin/false", tools), "<html>")
    assert verdict.status == "ERROR" and "exited with 1" in verdict.note


# -- CLI -------------------------------------------------------------------------------------------


def env_for(settings: Settings) -> dict[str, str]:
    return {
        "OPENTIME_PUBLIC_BASE_URL": settings.public_base_url,
        "OPENTIME_KEYS_FILE": str(settings.keys_file),
        "OPENTIME_ALLOWED_SENDERS": ",".join(settings.allowed_senders),
        "OPENTIME_DATABASE_URL": settings.database_url,
        "OPENTIME_TEMPLATES_DIR": str(settings.templates_dir),
    }


def run(settings: Settings, *args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(preview, ["--campaign", "demo", *args], env=env_for(settings))
    return result.exit_code, result.stdout, result.stderr


def test_cli_prints_the_report(settings: Settings) -> None:
    rid = recipient_id(2)
    code, out, _ = run(settings, "--recipient", rid, "--at", "2030-01-02T03:04:05Z")
    lines = out.splitlines()
    assert code == 0, out
    assert f"recipient  {rid} (profile found)" in lines
    assert "open time  2030-01-02T03:04:05Z" in lines
    assert f"subject    {attributes_of(rid)['first_name']}, your picks for this week" in lines
    assert any(line.startswith("  amp ") and line.endswith("bytes / 200,000") for line in lines)
    assert "  hello: live, 1 item(s)" in lines
    assert any(line.startswith("  picks: live, 4 item(s), fragment ") for line in lines)
    assert any(line.startswith("AMP validator: ") for line in lines)


def test_cli_unknown_recipient_says_fallback(settings: Settings) -> None:
    code, out, _ = run(settings, "--recipient", "ghost")
    assert code == 0
    assert "recipient  ghost (no profile (unknown-recipient): fallback content)" in out
    assert "  picks: fallback (unknown-recipient), 2 item(s)" in out
    lines = out.splitlines()
    banner = lines.index("  banner: layers drawn without their data:")
    assert lines[banner + 1].startswith('    layers[1] "you have {{')
    assert lines[banner + 1].endswith("missing 'loyalty', default")


def test_cli_says_when_every_image_layer_has_its_data(settings: Settings) -> None:
    code, out, _ = run(settings, "--recipient", recipient_id(2))
    assert code == 0 and "  banner: every layer has its data" in out.splitlines()


def test_cli_url(settings: Settings) -> None:
    code, out, _ = run(settings, "--recipient", "ada lovelace", "--at", "2030-01-02T03:04:05+01:00", "--url")
    assert code == 0
    assert out == f"{BASE_URL}/preview/demo?recipient=ada+lovelace&at=2030-01-02T03%3A04%3A05%2B01%3A00\n"
    code, out, _ = run(settings, "--recipient", "a", "--url", "--base-url", "http://127.0.0.1:8000/")
    assert out == "http://127.0.0.1:8000/preview/demo?recipient=a\n"


def test_cli_usage_errors(settings: Settings) -> None:
    code, _, err = run(settings, "--recipient", "a", "--at", "soon")
    assert code == 2 and "ISO 8601" in err
    result = CliRunner().invoke(preview, ["--campaign", "nope", "--recipient", "a"], env=env_for(settings))
    assert result.exit_code == 2 and "unknown campaign 'nope'" in result.stderr
    code, _, err = run(settings, "--recipient", "a" * 201)
    assert code == 2 and "bad recipient" in err


def test_cli_exits_1_when_the_validator_fails_the_email(
    settings: Settings, amp_validator: AmpValidator, tmp_path: Path
) -> None:
    code, out, _ = run(insecure_demo(settings, tmp_path), "--recipient", recipient_id(1))
    assert code == 1
    assert "AMP validator: FAIL" in out and "INVALID_URL_PROTOCOL" in out
    assert f"the AMP part as sent, URLs on {BASE_URL} (public_base_url)" in out


def test_cli_validates_an_http_base_url_as_sent(settings: Settings, amp_validator: AmpValidator) -> None:
    # http://localhost (serve --demo): the email as sent carries https URLs, so it passes, and says why.
    code, out, _ = run(
        settings.replace(public_base_url="http://localhost:8000"), "--recipient", recipient_id(1)
    )
    assert code == 0, out
    assert "AMP validator: PASS" in out
    assert (
        "  the AMP part as sent, URLs on the placeholder https://amp.example.com: public_base_url "
        "http://localhost:8000 is http, which AMP email clients and the validator refuse"
    ) in out.splitlines()
