"""The command line, through click's CliRunner (same process, real files)."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from app.cli.main import main


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


def run(runner: CliRunner, *args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    result = runner.invoke(main, list(args), env=env, catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


def test_keys_generate_list_rotate_remove(runner: CliRunner, tmp_path: Path) -> None:
    keys = tmp_path / "keys.json"
    assert run(runner, "keys", "generate", "--out", str(keys))[0] == 0
    assert keys.stat().st_mode & 0o777 == 0o600
    code, _, err = run(runner, "keys", "generate", "--out", str(keys))
    assert code == 2 and "exist" in err
    first = run(runner, "keys", "list", "--keys", str(keys))[1].split()[0]
    run(runner, "keys", "rotate", "--keys", str(keys))
    listing = run(runner, "keys", "list", "--keys", str(keys))[1]
    assert len(listing.splitlines()) == 2 and "(signs)" not in listing.splitlines()[0].split(first)[-1]
    assert json.loads(keys.read_text())["keys"][0]["secret"] not in listing
    assert run(runner, "keys", "remove", "--keys", str(keys), "--kid", first)[0] == 0
    code, _, err = run(runner, "keys", "remove", "--keys", str(keys), "--kid", "abcdef")
    assert code == 2


def test_sign_then_verify_round_trip(runner: CliRunner, keys_file: Path) -> None:
    code, out, _ = run(
        runner,
        "sign",
        "--keys",
        str(keys_file),
        "--campaign",
        "demo",
        "--recipient",
        "ada@example.com",
        "--base-url",
        "https://amp.example.com",
    )
    assert code == 0
    token = out.strip().splitlines()[-1]
    assert "ada@example.com" not in out and "@example.com" not in out
    assert "list:picks: https://amp.example.com/v1/" in out
    code, out, _ = run(runner, "verify", "--keys", str(keys_file), token)
    claims = json.loads(out)
    assert (code, claims["recipient"], claims["campaign"], claims["sealed"]) == (
        0,
        "ada@example.com",
        "demo",
        True,
    )


def test_verify_says_why_a_token_fails(runner: CliRunner, keys_file: Path) -> None:
    token = run(runner, "sign", "--keys", str(keys_file), "--campaign", "demo", "--recipient", "r1")[
        1
    ].split()[-1]
    code, out, _ = run(runner, "verify", "--keys", str(keys_file), token[:-4] + "AAAA")
    assert code == 1 and "token-bad-signature" in out
    code, out, _ = run(runner, "verify", "--keys", str(keys_file), "%%%")
    assert code == 1 and "token-malformed" in out


def test_sign_rejects_bad_input_and_missing_keys(runner: CliRunner, keys_file: Path, tmp_path: Path) -> None:
    code, _, err = run(runner, "sign", "--keys", str(keys_file), "--campaign", "Bad Name", "--recipient", "r")
    assert code == 2 and "campaign" in err
    code, _, err = run(
        runner, "sign", "--keys", str(tmp_path / "none.json"), "--campaign", "demo", "--recipient", "r"
    )
    assert code == 2 and "none.json" in err


def test_tokens_export_adds_token_and_urls(runner: CliRunner, keys_file: Path, tmp_path: Path) -> None:
    source = tmp_path / "recipients.csv"
    source.write_text("recipient_id,segment\ncust-1,a\nbob@example.com,b\n,c\n")
    code, out, err = run(
        runner,
        "tokens",
        "export",
        "--keys",
        str(keys_file),
        "--campaign",
        "demo",
        "--base-url",
        "https://amp.example.com",
        str(source),
    )
    rows = list(csv.DictReader(io.StringIO(out)))
    assert code == 1 and "line 4" in err  # the empty id is reported, the others exported
    assert [r["segment"] for r in rows] == ["a", "b"]
    assert (
        rows[0]["url_list_picks"] == f"https://amp.example.com/v1/{rows[0]['opentime_token']}/list/picks.json"
    )
    assert "bob" not in rows[1]["opentime_token"]


def test_check_config_prints_sources_and_masks(runner: CliRunner, keys_file: Path) -> None:
    env = {
        "OPENTIME_PUBLIC_BASE_URL": "https://amp.example.com",
        "OPENTIME_KEYS_FILE": str(keys_file),
        "OPENTIME_ALLOWED_SENDERS": "news@example.com",
        "OPENTIME_DATABASE_URL": "postgresql://app:hunter2@db/x",
    }
    code, out, _ = run(runner, "check-config", env=env)
    assert code == 0
    assert "source: env OPENTIME_PUBLIC_BASE_URL" in out and "source: default" in out
    assert "hunter2" not in out and "app:****@db" in out
    assert "  demo: 4 blocks (2 lists, 1 image, 1 countdown), 1 fragment, email + web view" in out


def test_check_config_and_serve_exit_2_on_missing_settings(runner: CliRunner) -> None:
    env = {"OPENTIME_PUBLIC_BASE_URL": "https://amp.example.com"}
    for command in (["check-config"], ["serve"]):
        code, _, err = run(runner, *command, env=env)
        assert code == 2 and "missing setting keys_file" in err


def test_import_reports_and_loads(runner: CliRunner, tmp_path: Path) -> None:
    data = tmp_path / "people.jsonl"
    data.write_text('{"recipient_id": "a1", "first_name": "Ada"}\n{"first_name": "nobody"}\n')
    url = f"sqlite:///{tmp_path / 'p.db'}"
    code, out, err = run(runner, "import", str(data), "--database-url", url)
    assert code == 1 and "line 2" in err and "nothing loaded" in out
    code, out, _ = run(runner, "import", str(data), "--database-url", url, "--skip-invalid")
    assert code == 1 and "loaded (new or changed): 1" in out
    data.write_text('{"recipient_id": "a1", "first_name": "Ada"}\n')
    code, out, _ = run(runner, "import", str(data), "--database-url", url)
    assert code == 0 and "unchanged: 1" in out
