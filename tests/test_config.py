from __future__ import annotations

from pathlib import Path

import pytest

from app.config import FIELDS_BY_NAME, load_settings, masked
from app.errors import ConfigError

REQUIRED = {
    "OPENTIME_PUBLIC_BASE_URL": "https://amp.example.com/",
    "OPENTIME_KEYS_FILE": "/etc/opentime/keys.json",
    "OPENTIME_ALLOWED_SENDERS": "news@example.com, *@corp.example",
}


def test_env_settings_are_parsed_strictly_with_sources() -> None:
    loaded = load_settings({**REQUIRED, "OPENTIME_WORKERS": "4", "OPENTIME_ACCESS_LOG": "true"})
    settings = loaded.settings
    assert settings.public_base_url == "https://amp.example.com"  # trailing slash trimmed
    assert settings.allowed_senders == ("news@example.com", "*@corp.example")
    assert (settings.workers, settings.access_log) == (4, True)
    assert loaded.sources["workers"] == "env OPENTIME_WORKERS"
    assert loaded.sources["port"] == "default"


@pytest.mark.parametrize("missing", sorted(REQUIRED))
def test_missing_required_setting_names_it(missing: str) -> None:
    env = {k: v for k, v in REQUIRED.items() if k != missing}
    with pytest.raises(ConfigError, match=missing):
        load_settings(env)


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("OPENTIME_ACCESS_LOG", "yes", "true, false, 1 or 0"),
        ("OPENTIME_WORKERS", "0", "positive integer"),
        ("OPENTIME_WORKERS", "two", "integer"),
        ("OPENTIME_PORT", "70000", "TCP port"),
        ("OPENTIME_PUBLIC_BASE_URL", "http://amp.example.com", "https"),
        ("OPENTIME_PUBLIC_BASE_URL", "amp.example.com", "absolute URL"),
        ("OPENTIME_PUBLIC_BASE_URL", "https://amp.example.com/?x=1", "query"),
        ("OPENTIME_ALLOWED_SENDERS", " , ", "at least one"),
        ("OPENTIME_LOG_LEVEL", "loud", "one of"),
        ("OPENTIME_CACHE_TTL_SECONDS", "-1", "greater than 0"),
    ],
)
def test_malformed_values_are_errors_naming_setting_and_source(name: str, value: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as info:
        load_settings({**REQUIRED, name: value})
    assert name in str(info.value)


def test_http_base_url_is_allowed_for_localhost_only() -> None:
    settings = load_settings({**REQUIRED, "OPENTIME_PUBLIC_BASE_URL": "http://127.0.0.1:8000"}).settings
    assert settings.public_base_url == "http://127.0.0.1:8000"


def test_toml_file_then_env_then_overrides(tmp_path: Path) -> None:
    config = tmp_path / "opentime.toml"
    config.write_text(
        'public_base_url = "https://cdn.example.com"\nkeys_file = "/k.json"\n'
        'allowed_senders = ["a@example.com"]\nport = 9000\nworkers = 2\n'
    )
    loaded = load_settings({"OPENTIME_CONFIG": str(config), "OPENTIME_PORT": "9100"}, workers=3)
    assert (loaded.settings.port, loaded.settings.workers) == (9100, 3)
    assert loaded.sources["public_base_url"] == f"file {config}"
    assert loaded.sources["workers"] == "command line"


@pytest.mark.parametrize(
    ("text", "message"),
    [("port = [", "not valid TOML"), ("colour = 'red'", "unknown setting"), ("port = true", "integer")],
)
def test_bad_toml_files(tmp_path: Path, text: str, message: str) -> None:
    config = tmp_path / "bad.toml"
    config.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_settings(REQUIRED, config)


def test_unreadable_config_file() -> None:
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_settings(REQUIRED, Path("/nonexistent/opentime.toml"))


def test_database_password_is_masked() -> None:
    field = FIELDS_BY_NAME["database_url"]
    assert masked(field, "postgresql://app:s3cret@db/opentime") == "postgresql://app:****@db/opentime"
    # Leak: asyncpg and libpq also take the password as a query parameter; it was printed as given.
    assert (
        masked(field, "postgresql://app@db/opentime?sslmode=require&password=s3cret&sslpassword=k3y")
        == "postgresql://app@db/opentime?sslmode=require&password=****&sslpassword=****"
    )
    assert masked(field, "postgresql://app:a@db/x?PASSWORD=b") == "postgresql://app:****@db/x?PASSWORD=****"
    assert masked(FIELDS_BY_NAME["allowed_senders"], ("a@x.com", "b@y.com")) == "a@x.com, b@y.com"


def test_readme_documents_every_setting() -> None:
    from app.config import FIELDS, PROJECT_ROOT

    readme = (PROJECT_ROOT / "README.md").read_text()
    missing = [f.env_var for f in FIELDS if f"`{f.env_var}`" not in readme or f"`{f.name}`" not in readme]
    assert not missing


def test_secrets_stay_out_of_the_settings_repr() -> None:
    env = {
        **REQUIRED,
        "OPENTIME_WEBHOOK_SECRETS": "whsec-0123456789abcdef",
        "OPENTIME_METRICS_TOKEN": "m3tr1cs-t0ken",
    }
    text = repr(load_settings(env).settings)
    assert "whsec-0123456789abcdef" not in text and "m3tr1cs-t0ken" not in text
