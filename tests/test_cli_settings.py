"""Every command reads the settings ``serve`` reads: ``--config``, else ``OPENTIME_CONFIG``, plus env.

The bug these guard against: with ``OPENTIME_CONFIG`` naming database A, ``opentime import`` loaded
the rows into the project's default database while the server read A, and nothing said so.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from click.testing import CliRunner

from app.cli.main import main
from app.security.keyring import KeyRing, new_keyring, save_keyring
from app.store import open_store

PEOPLE = '{"recipient_id": "a1", "first_name": "Ada"}\n'


def run(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, list(args), env=env, catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


def write_config(path: Path, database: Path, keys: Path, **extra: str) -> Path:
    lines = [
        'public_base_url = "https://amp.example.com"',
        f'keys_file = "{keys}"',
        'allowed_senders = ["news@example.com"]',
        f'database_url = "sqlite:///{database}"',
        *(f'{name} = "{value}"' for name, value in extra.items()),
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


def stored_ids(database: Path) -> list[str]:
    async def read() -> list[str]:
        store = open_store(f"sqlite:///{database}")
        await store.open()
        try:
            return sorted(await store.get_many(["a1"]))
        finally:
            await store.close()

    return asyncio.run(read())


@pytest.fixture
def people(tmp_path: Path) -> Path:
    path = tmp_path / "people.jsonl"
    path.write_text(PEOPLE)
    return path


@pytest.fixture
def config_a(tmp_path: Path, keys_file: Path) -> Path:
    return write_config(tmp_path / "a.toml", tmp_path / "a.db", keys_file)


def test_import_loads_into_the_database_opentime_config_names(
    tmp_path: Path, people: Path, config_a: Path
) -> None:
    code, out, err = run("import", str(people), env={"OPENTIME_CONFIG": str(config_a)})
    assert code == 0, err
    assert "loaded (new or changed): 1" in out
    assert f"store: sqlite:///{tmp_path / 'a.db'} (file {config_a})" in err  # says which store
    assert stored_ids(tmp_path / "a.db") == ["a1"]


def test_config_option_beats_opentime_config(
    tmp_path: Path, people: Path, config_a: Path, keys_file: Path
) -> None:
    config_b = write_config(tmp_path / "b.toml", tmp_path / "b.db", keys_file)
    code, _, err = run(
        "import", "--config", str(config_b), str(people), env={"OPENTIME_CONFIG": str(config_a)}
    )
    assert code == 0, err
    assert stored_ids(tmp_path / "b.db") == ["a1"] and not (tmp_path / "a.db").exists()


def test_env_beats_the_file_and_database_url_overrides_both(
    tmp_path: Path, people: Path, config_a: Path
) -> None:
    env = {"OPENTIME_CONFIG": str(config_a), "OPENTIME_DATABASE_URL": f"sqlite:///{tmp_path / 'env.db'}"}
    code, _, err = run("import", str(people), env=env)
    assert code == 0 and "(env OPENTIME_DATABASE_URL)" in err
    assert stored_ids(tmp_path / "env.db") == ["a1"]
    flag = f"sqlite:///{tmp_path / 'flag.db'}"
    code, _, err = run("import", "--database-url", flag, str(people), env=env)
    assert code == 0 and f"store: {flag} (command line)" in err
    assert stored_ids(tmp_path / "flag.db") == ["a1"] and not (tmp_path / "a.db").exists()


def test_store_line_masks_a_password(people: Path) -> None:
    code, _, err = run("import", "--database-url", "postgresql://app:hunter2@127.0.0.1:1/x", str(people))
    assert code == 2 and "app:****@127.0.0.1" in err and "hunter2" not in err
    assert "error: postgresql app@127.0.0.1:1/x: " in err  # nothing listens on port 1


def test_a_malformed_setting_is_reported_even_when_the_command_does_not_use_it(
    tmp_path: Path, people: Path, keys_file: Path
) -> None:
    config = write_config(tmp_path / "bad.toml", tmp_path / "a.db", keys_file, log_level="loud")
    code, _, err = run("import", "--config", str(config), str(people))
    assert code == 2 and "setting log_level" in err and "Traceback" not in err
    assert not (tmp_path / "a.db").exists()


def test_apikeys_use_the_configured_database(tmp_path: Path, config_a: Path) -> None:
    env = {"OPENTIME_CONFIG": str(config_a)}
    code, _, err = run("apikeys", "create", "--name", "esp", "--scope", "render", env=env)
    assert code == 0 and f"store: sqlite:///{tmp_path / 'a.db'}" in err
    assert "\tesp\t" in run("apikeys", "list", env=env)[1]
    other = {"OPENTIME_DATABASE_URL": f"sqlite:///{tmp_path / 'other.db'}"}
    assert "\tesp\t" not in run("apikeys", "list", env=other)[1]


def test_validate_reads_recipients_from_the_configured_database(
    tmp_path: Path, people: Path, config_a: Path
) -> None:
    env = {"OPENTIME_CONFIG": str(config_a)}
    assert run("import", str(people), env=env)[0] == 0
    # The exit code depends on whether the AMP validator is installed; the store it read does not.
    _, _, err = run("validate", "--recipient", "a1", env=env)
    assert f"store: sqlite:///{tmp_path / 'a.db'} (file {config_a})" in err


def test_sign_and_verify_use_the_configured_key_ring(tmp_path: Path, config_a: Path, ring: KeyRing) -> None:
    env = {"OPENTIME_CONFIG": str(config_a)}
    code, out, err = run("sign", "--campaign", "demo", "--recipient", "r1", env=env)
    assert code == 0, err
    assert "list:picks: https://amp.example.com/v1/" in out  # public_base_url from the file
    token = out.splitlines()[-1]
    assert run("verify", token, env=env)[0] == 0
    # --keys overrides the setting: another ring does not know the token's key.
    other = tmp_path / "other.json"
    save_keyring(new_keyring(ring.signing_key.created), other, overwrite=False)
    code, out, _ = run("verify", "--keys", str(other), token, env=env)
    assert code == 1 and "token-unknown-key" in out


def test_keys_list_without_any_key_ring_names_the_setting() -> None:
    code, _, err = run("keys", "list")
    assert code == 2 and "missing setting keys_file" in err and "OPENTIME_KEYS_FILE" in err


def test_check_config_shows_defaults(config_a: Path) -> None:
    code, out, _ = run("check-config", "--config", str(config_a))
    assert code == 0
    assert "source: default (default: 8000)" in out
    assert f"source: file {config_a} (default: required)" in out
