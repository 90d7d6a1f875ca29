"""``opentime validate`` with the official validator (skipped without it locally, required in CI)."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from app.campaigns.validator import AmpValidator
from app.cli.main import main
from app.config import Settings


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, ["validate", *args])
    return result.exit_code, result.output


def test_every_shipped_campaign_passes(
    amp_validator: AmpValidator, settings: Settings, tmp_path: Path
) -> None:
    profile = tmp_path / "ada.json"
    profile.write_text(
        json.dumps({"first_name": "<b>Ada</b>", "recommendations": [{"name": "x", "sku": "1"}]})
    )
    code, out = run(
        "--profile",
        str(profile),
        "--recipient",
        "cust-0000001",
        "--recipient",
        "ghost",
        "--database-url",
        settings.database_url,
    )
    assert code == 0, out
    assert "PASS  demo / recipient cust-0000001" in out
    assert "PASS  demo / recipient ghost (no profile)" in out
    assert "PASS  weekly-picks / profile ada.json" in out


def test_invalid_file_fails_with_line_and_column(amp_validator: AmpValidator, tmp_path: Path) -> None:
    page = tmp_path / "bad.html"
    page.write_text("<!doctype html>\n<html>\n<body><p>hi</p></body></html>\n")
    code, out = run(str(page))
    assert code == 1
    assert "FAIL" in out and "MANDATORY_ATTR_MISSING" in out
    assert "2:0 ERROR" in out
    assert "0 passed, 1 failed" in out


def test_unknown_campaign_is_an_error(amp_validator: AmpValidator) -> None:
    code, out = run("--campaign", "nope")
    assert code == 1 and "unknown campaign 'nope'" in out
