"""Upstream and metrics settings: strict parsing, combinations, masking, and the client config built."""

from __future__ import annotations

import pytest

from app.config import FIELDS_BY_NAME, load_settings, masked
from app.errors import ConfigError
from app.services import upstream_config
from app.upstream.client import OAuth2ClientCredentials, StaticHeaderAuth
from tests.test_config import REQUIRED

URL = "https://crm.example.com/profiles/{recipient}"


def load(**env: str) -> object:
    return load_settings({**REQUIRED, **{f"OPENTIME_{k.upper()}": v for k, v in env.items()}}).settings


def test_no_upstream_by_default() -> None:
    settings = load_settings(REQUIRED).settings
    assert settings.upstream_url == "" and upstream_config(settings) is None


def test_static_header_upstream() -> None:
    settings = load_settings(
        {
            **REQUIRED,
            "OPENTIME_UPSTREAM_URL": URL,
            "OPENTIME_UPSTREAM_AUTH_HEADER": "X-Api-Key",
            "OPENTIME_UPSTREAM_AUTH_VALUE": "k-123",
            "OPENTIME_UPSTREAM_RETRIES": "0",
            "OPENTIME_UPSTREAM_STALE_TTL_SECONDS": "0",
        }
    ).settings
    config = upstream_config(settings)
    assert config is not None
    assert config.auth == StaticHeaderAuth("X-Api-Key", "k-123")
    assert (config.retries, config.stale_ttl_s, config.fresh_ttl_s) == (0, 0.0, 60.0)


def test_oauth_upstream() -> None:
    settings = load_settings(
        {
            **REQUIRED,
            "OPENTIME_UPSTREAM_URL": URL,
            "OPENTIME_UPSTREAM_TOKEN_URL": "https://auth.example.com/token",
            "OPENTIME_UPSTREAM_CLIENT_ID": "opentime",
            "OPENTIME_UPSTREAM_CLIENT_SECRET": "s3cret",
        }
    ).settings
    config = upstream_config(settings)
    assert config is not None and isinstance(config.auth, OAuth2ClientCredentials)
    assert (config.auth.client_id, config.auth.scope) == ("opentime", None)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"upstream_url": "https://crm.example.com/profiles"}, "must contain {recipient}"),
        ({"upstream_url": "ftp://crm/{recipient}"}, "http"),
        ({"upstream_url": URL, "upstream_auth_header": "X-Api-Key"}, "also needs upstream_auth_value"),
        (
            {"upstream_url": URL, "upstream_auth_header": "Bad Header", "upstream_auth_value": "v"},
            "header name",
        ),
        ({"upstream_url": URL, "upstream_client_id": "x"}, "also needs upstream_token_url"),
        ({"upstream_retries": "1"}, "needs upstream_url"),
        ({"upstream_url": URL, "upstream_retries": "-1"}, "0 or more"),
        ({"upstream_url": URL, "upstream_fresh_ttl_seconds": "0"}, "greater than 0"),
        ({"upstream_url": URL, "upstream_total_timeout_seconds": "0.1"}, "connect_timeout"),
        (
            {
                "upstream_url": URL,
                "upstream_auth_header": "X-Api-Key",
                "upstream_auth_value": "v",
                "upstream_token_url": "https://a.example.com/t",
                "upstream_client_id": "i",
                "upstream_client_secret": "s",
            },
            "not both",
        ),
    ],
)
def test_bad_upstream_settings(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load(**env)


def test_credentials_are_masked() -> None:
    for name in ("upstream_auth_value", "upstream_client_secret", "metrics_token"):
        assert masked(FIELDS_BY_NAME[name], "Bearer abc") == "<secret>"
        assert masked(FIELDS_BY_NAME[name], "") == ""
    assert masked(FIELDS_BY_NAME["upstream_url"], URL) == URL
