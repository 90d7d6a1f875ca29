"""``opentime render`` in its three formats, against a real SQLite store."""

from __future__ import annotations

import email
import email.policy
import json
from pathlib import Path

from click.testing import CliRunner

from app.campaigns.validator import AmpValidator
from app.cli.main import main
from app.config import Settings


def env_for(settings: Settings) -> dict[str, str]:
    return {
        "OPENTIME_PUBLIC_BASE_URL": settings.public_base_url,
        "OPENTIME_KEYS_FILE": str(settings.keys_file),
        "OPENTIME_ALLOWED_SENDERS": ",".join(settings.allowed_senders),
        "OPENTIME_DATABASE_URL": settings.database_url,
    }


def render(settings: Settings, *args: str) -> tuple[int, bytes, str]:
    result = CliRunner().invoke(main, ["render", "--campaign", "demo", *args], env=env_for(settings))
    return result.exit_code, result.stdout_bytes, result.stderr


def test_render_eml_is_a_parseable_multipart_message(settings: Settings) -> None:
    code, out, _ = render(settings, "--recipient", "cust-0000001", "--to", "ada@example.org")
    assert code == 0
    message = email.message_from_bytes(out, policy=email.policy.default)
    assert [p.get_content_type() for p in message.iter_parts()] == [
        "text/plain",
        "text/x-amp-html",
        "text/html",
    ]
    assert message["To"] == "ada@example.org"


def test_render_json_and_parts(settings: Settings, tmp_path: Path) -> None:
    code, out, _ = render(settings, "--recipient", "cust-0000002", "--format", "json")
    data = json.loads(out)
    assert code == 0 and set(data["sizes"]) == {"text", "amp", "html"}
    assert "https://amp.example.test/v1/" in data["amp"]
    code, out, _ = render(
        settings, "--recipient", "cust-0000002", "--format", "parts", "--out", str(tmp_path)
    )
    assert code == 0
    assert (tmp_path / "email.amp.html").read_text().startswith("<!doctype html>")


def test_render_unknown_recipient_uses_fallbacks_and_says_so(settings: Settings) -> None:
    code, out, err = render(settings, "--recipient", "ghost", "--format", "json")
    assert code == 0 and "no profile" in err
    assert "Bestsellers of the week" in json.loads(out)["html"]


def test_render_unknown_campaign_fails_clearly(settings: Settings) -> None:
    result = CliRunner().invoke(
        main, ["render", "--campaign", "nope", "--recipient", "r"], env=env_for(settings)
    )
    assert result.exit_code == 1 and "unknown campaign 'nope'" in result.stderr


def test_render_base_url_overrides_the_setting_and_http_warns(
    settings: Settings, amp_validator: AmpValidator
) -> None:
    local = settings.replace(public_base_url="http://127.0.0.1:8000")
    code, out, err = render(local, "--recipient", "cust-0000001", "--format", "json")
    amp = json.loads(out)["amp"]
    assert code == 0 and "http://127.0.0.1:8000/v1/" in amp
    assert (
        "warning: public_base_url http://127.0.0.1:8000 is http: AMP email clients and the AMP validator "
        "refuse the AMP part's URLs; render the email as sent with --base-url https://<your host> "
        "(e.g. --base-url https://amp.example.com)"
    ) in err.splitlines()
    assert not amp_validator.validate(amp).passed  # what the warning is about
    code, out, err = render(
        local, "--recipient", "cust-0000001", "--format", "json", "--base-url", "https://cdn.example.com/amp"
    )
    amp = json.loads(out)["amp"]
    assert code == 0 and "warning" not in err
    assert "https://cdn.example.com/amp/v1/" in amp and "127.0.0.1" not in amp
    assert amp_validator.validate(amp).passed
    code, _, err = render(local, "--recipient", "a", "--base-url", "http://cdn.example.com")
    assert code == 2 and "public_base_url" in err and "https" in err
