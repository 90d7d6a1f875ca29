"""``opentime render`` in its three formats, against a real SQLite store."""

from __future__ import annotations

import email
import email.policy
import json
from pathlib import Path

from click.testing import CliRunner

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
    # ... and which image layers fall back for that recipient, and why
    assert "note: image banner: layers[1] \"you have {{ '{:,}'.format(profile.loyalty.points) }}" in err
    assert "missing 'loyalty', default" in err


def test_render_names_no_layer_when_the_data_is_there(settings: Settings) -> None:
    code, _, err = render(settings, "--recipient", "cust-0000001", "--format", "json")
    assert code == 0 and "note: image" not in err


def test_render_unknown_campaign_fails_clearly(settings: Settings) -> None:
    result = CliRunner().invoke(
        main, ["render", "--campaign", "nope", "--recipient", "r"], env=env_for(settings)
    )
    assert result.exit_code == 1 and "unknown campaign 'nope'" in result.stderr
