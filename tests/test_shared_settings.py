"""The Redis settings: strict parsing, masked passwords, and tunables that need ``redis_url``."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from app.config import FIELDS_BY_NAME, load_settings, masked
from app.errors import ConfigError
from app.shared.config import redis_config


def env(keys_file: Path, **settings: str) -> dict[str, str]:
    given = {
        "OPENTIME_PUBLIC_BASE_URL": "https://amp.example.com",
        "OPENTIME_KEYS_FILE": str(keys_file),
        "OPENTIME_ALLOWED_SENDERS": "a@example.com",
    }
    return given | {f"OPENTIME_{name.upper()}": value for name, value in settings.items()}


def test_without_redis_url_there_is_no_shared_tier(keys_file: Path) -> None:
    settings = load_settings(env(keys_file)).settings
    assert settings.redis_url == "" and redis_config(settings) is None


def test_redis_settings_parse(keys_file: Path) -> None:
    settings = load_settings(
        env(keys_file, redis_url="redis://:pw@cache:6380/2", redis_key_prefix="prod:", redis_timeout_ms="20")
    ).settings
    config = redis_config(settings)
    assert config is not None
    assert (config.url, config.prefix, config.timeout_s) == ("redis://:pw@cache:6380/2", "prod:", 0.02)
    assert masked(FIELDS_BY_NAME["redis_url"], settings.redis_url) == "redis://:****@cache:6380/2"
    assert "pw" not in repr(settings)


@pytest.mark.parametrize(
    ("settings", "error"),
    [
        ({"redis_url": "http://cache:6379"}, "redis://host:port/db"),
        ({"redis_url": "redis://:secret@cache/x"}, "database as a number"),
        ({"redis_timeout_ms": "20"}, "needs redis_url"),
        ({"redis_url": "redis://cache", "redis_key_prefix": "a b"}, "without spaces"),
        ({"redis_url": "redis://cache", "redis_timeout_ms": "0"}, "positive"),
    ],
)
def test_bad_redis_settings_are_refused(keys_file: Path, settings: dict[str, str], error: str) -> None:
    with pytest.raises(ConfigError, match=error) as caught:
        load_settings(env(keys_file, **settings))
    assert "secret" not in str(caught.value)


def test_a_process_without_redis_or_postgresql_does_not_load_their_drivers() -> None:
    """The one-process default stays as light as before: the drivers load only where configured."""
    code = (
        "import sys, app.app, app.services, app.cli.main, app.store;"
        "print(sorted(m for m in ('asyncpg', 'redis', 'aiocache', 'hiredis') if m in sys.modules))"
    )
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert loaded.stdout.strip() == "[]"
