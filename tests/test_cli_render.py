"""``opentime render`` in its three formats, against a real SQLite store."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from app.campaigns.validator import AmpValidator
from app.cli.main import main
from app.config import PROJECT_ROOT, Settings
from tests.eml_checks import assert_complete, assert_mailparser_agrees, contents, read_strict
from tests.node_tools import NodeTools


def env_for(settings: Settings) -> dict[str, str]:
    return {
        "OPENTIME_PUBLIC_BASE_URL": settings.public_base_url,
        "OPENTIME_KEYS_FILE": str(settings.keys_file),
        "OPENTIME_ALLOWED_SENDERS": ",".join(settings.allowed_senders),
        "OPENTIME_DATABASE_URL": settings.database_url,
        "OPENTIME_TEMPLATES_DIR": str(settings.templates_dir),
    }


def without_sender(settings: Settings, tmp_path: Path) -> Settings:
    """The settings with a copy of the demo campaign that declares no ``from``."""
    shutil.copytree(PROJECT_ROOT / "amp_templates" / "demo", tmp_path / "templates" / "demo")
    blocks = tmp_path / "templates" / "demo" / "blocks.toml"
    lines = blocks.read_text().splitlines(keepends=True)
    blocks.write_text("".join(line for line in lines if not line.startswith("from = ")))
    return settings.replace(templates_dir=tmp_path / "templates")


def render(settings: Settings, *args: str) -> tuple[int, bytes, str]:
    result = CliRunner().invoke(main, ["render", "--campaign", "demo", *args], env=env_for(settings))
    return result.exit_code, result.stdout_bytes, result.stderr


def test_render_eml_is_a_complete_message_both_parsers_read(
    settings: Settings, node_tools: NodeTools, amp_validator: AmpValidator
) -> None:
    code, out, err = render(settings, "--recipient", "cust-0000001", "--to", "Ada <ada@Bücher.example>")
    assert code == 0 and "warning" not in err
    message = read_strict(out)
    assert_complete(message, now=time.time(), to=True)
    assert message["From"] == "Opentime Demo <news@example.com>"  # the campaign's from
    assert message["To"] == "Ada <ada@xn--bcher-kva.example>"
    assert message["Message-ID"].endswith("@example.com>")
    [seen] = assert_mailparser_agrees(node_tools, [out])
    assert seen["to"] == [{"name": "Ada", "address": "ada@bücher.example"}]
    result = amp_validator.validate(contents(message)[1])
    assert result.passed, result.format()


def test_render_eml_from_option_wins_and_its_domain_makes_the_message_id(settings: Settings) -> None:
    code, out, _ = render(settings, "--recipient", "cust-0000001", "--from", "Shop <hello@shop.example>")
    assert code == 0
    message = read_strict(out)
    assert_complete(message, now=time.time(), to=False)
    assert message["From"] == "Shop <hello@shop.example>"
    assert message["Message-ID"].endswith("@shop.example>")


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("--to", "ada@", "--to: 'ada@' is not an email address"),
        ("--to", "zoë@example.com", "--to: local part 'zoë' is not ASCII"),
        ("--to", "ada@a_b.example", "--to: domain 'a_b.example' is not a valid domain name"),
        ("--to", "a@example.org, b@example.org", "--to: 'a@example.org, b@example.org' holds more than one"),
        ("--from", "Shop, Inc. <news@example.com>", "--from: display name"),
    ],
)
def test_invalid_addresses_are_a_one_line_error(
    settings: Settings, option: str, value: str, message: str
) -> None:
    code, out, err = render(settings, "--recipient", "cust-0000001", option, value)
    assert code == 2 and out == b""
    assert err.startswith(f"error: {message}") and err.count("\n") == 1


def test_from_equal_to_to_warns(settings: Settings) -> None:
    code, out, err = render(settings, "--recipient", "cust-0000001", "--to", "NEWS@example.com")
    assert code == 0 and read_strict(out)["To"] == "NEWS@example.com"
    assert "warning: From and To are the same address (news@example.com): Gmail shows the HTML part" in err


def test_eml_without_any_from_is_refused(settings: Settings, tmp_path: Path) -> None:
    code, out, err = render(without_sender(settings, tmp_path), "--recipient", "cust-0000001")
    assert code == 1 and out == b""
    assert err.splitlines()[-1] + "\n" == (
        "error: no From address: campaign 'demo' declares none (from = \"Name <news@example.com>\" under "
        "[campaign] in its blocks.toml) and none was given: pass --from\n"
    )


def test_other_formats_without_a_from_warn(settings: Settings, tmp_path: Path) -> None:
    code, out, err = render(
        without_sender(settings, tmp_path), "--recipient", "cust-0000001", "--format", "json"
    )
    assert code == 0
    assert "warning: no From address: campaign 'demo' declares none" in err
    assert json.loads(out)["warnings"] == [
        "no From address: campaign 'demo' declares none (from = \"Name <news@example.com>\" under [campaign] "
        "in its blocks.toml) and none was given; .eml output needs one"
    ]
    code, out, err = render(
        without_sender(settings, tmp_path / "x"), "--recipient", "r", "--from", "news@example.com"
    )
    assert code == 0 and "warning" not in err and read_strict(out)["From"] == "news@example.com"


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
