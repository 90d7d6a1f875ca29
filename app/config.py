"""One strict settings object, read from ``OPENTIME_*`` environment variables and/or a TOML file.

Every setting is one ``Field`` record (name, parser, default, help) so ``opentime check-config`` can
print them all with their source. Casting is strict (a bool is true/false/1/0) and a missing or
malformed value raises ``ConfigError`` naming the setting and where it came from. There is no
default secret: the key ring file and the sender allowlist must be given (``--demo`` makes its own).
"""

from __future__ import annotations

import dataclasses
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from app.errors import ConfigError
from app.ingest.event_types import EventTypesError, with_custom_types
from app.ingest.events import Rule

ENV_PREFIX = "OPENTIME_"
CONFIG_ENV = "OPENTIME_CONFIG"
PROJECT_ROOT = Path(__file__).resolve().parent.parent
LOCAL_HOSTS = frozenset({"localhost", "127.0.0.1", "::1", "[::1]"})
LOG_LEVELS = ("critical", "error", "warning", "info", "debug")
MIN_SECRET_LENGTH = 16
DEFAULT_DATABASE_URL = f"sqlite:///{PROJECT_ROOT / 'opentime.db'}"


class _Required:
    def __repr__(self) -> str:
        return "<required>"


REQUIRED: Any = _Required()


@dataclass(frozen=True, slots=True)
class Settings:
    public_base_url: str
    keys_file: Path
    allowed_senders: tuple[str, ...]
    database_url: str = DEFAULT_DATABASE_URL
    templates_dir: Path = PROJECT_ROOT / "amp_templates"
    static_dir: Path = PROJECT_ROOT / "static"
    cache_max_bytes: int = 32 * 1024 * 1024
    cache_ttl_seconds: float = 300.0
    negative_ttl_seconds: float = 30.0
    token_ttl_days: int = 31
    default_budget_ms: int = 150
    host: str = "127.0.0.1"
    port: int = 8000
    workers: int = 1
    forwarded_allow_ips: str = "127.0.0.1"
    log_level: str = "info"
    access_log: bool = False
    webhook_secrets: tuple[str, ...] = dataclasses.field(default=(), repr=False)  # a secret
    webhook_tolerance_seconds: int = 300
    webhook_max_body_bytes: int = 1024 * 1024
    upstream_url: str = ""
    upstream_auth_header: str = ""
    upstream_auth_value: str = dataclasses.field(default="", repr=False)  # a secret
    upstream_token_url: str = ""
    upstream_client_id: str = ""
    upstream_client_secret: str = dataclasses.field(default="", repr=False)  # a secret
    upstream_scope: str = ""
    upstream_connect_timeout_seconds: float = 0.5
    upstream_read_timeout_seconds: float = 2.0
    upstream_total_timeout_seconds: float = 5.0
    upstream_retries: int = 2
    upstream_fresh_ttl_seconds: float = 60.0
    upstream_stale_ttl_seconds: float = 3600.0
    upstream_negative_ttl_seconds: float = 30.0
    metrics_token: str = dataclasses.field(default="", repr=False)  # a secret
    event_types_file: Path | None = None

    def replace(self, **changes: Any) -> Settings:
        return dataclasses.replace(self, **changes)


@dataclass(frozen=True, slots=True)
class Field:
    name: str
    parse: Callable[[Any], Any]
    help: str
    sensitive: bool = False

    @property
    def env_var(self) -> str:
        return ENV_PREFIX + self.name.upper()


@dataclass(frozen=True, slots=True)
class Loaded:
    """Settings plus, for each field, where its value came from."""

    settings: Settings
    sources: dict[str, str]


# --- strict parsers: each takes a str (env) or a TOML value and returns the typed value ---


def _str(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError("must be a non-empty string")
    return value.strip()


def _int(value: Any) -> int:
    if isinstance(value, bool):
        raise ValueError("must be an integer")
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value)
    raise ValueError(f"must be an integer, got {value!r}")


def _positive_int(value: Any) -> int:
    number = _int(value)
    if number <= 0:
        raise ValueError(f"must be a positive integer, got {number}")
    return number


def _port(value: Any) -> int:
    number = _int(value)
    if not 0 <= number <= 65535:
        raise ValueError(f"must be a TCP port (0-65535), got {number}")
    return number


def _float(value: Any) -> float:
    if isinstance(value, bool):
        raise ValueError("must be a number")
    try:
        return float(value)
    except (TypeError, ValueError):
        raise ValueError(f"must be a number, got {value!r}") from None


def _positive_float(value: Any) -> float:
    number = _float(value)
    if not number > 0:
        raise ValueError(f"must be greater than 0, got {number}")
    return number


def _bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "1"):
        return True
    if text in ("false", "0"):
        return False
    raise ValueError(f"must be true, false, 1 or 0, got {value!r}")


def _path(value: Any) -> Path:
    return Path(_str(value)).expanduser()


def _str_list(value: Any) -> tuple[str, ...]:
    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, list | tuple) or not all(isinstance(i, str) for i in items):
        raise ValueError("must be a comma-separated string or a list of strings")
    cleaned = tuple(i.strip() for i in items if i.strip())
    if not cleaned:
        raise ValueError("must list at least one entry")
    return cleaned


def _secret_list(value: Any) -> tuple[str, ...]:
    if isinstance(value, str | list | tuple) and not value:
        return ()  # no secrets: webhooks are disabled
    secrets = _str_list(value)
    if any(len(s) < MIN_SECRET_LENGTH for s in secrets):
        raise ValueError(f"each secret must be at least {MIN_SECRET_LENGTH} characters")
    return secrets


def _optional_str(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError("must be a string")
    return value.strip()


def _non_negative_int(value: Any) -> int:
    number = _int(value)
    if number < 0:
        raise ValueError(f"must be 0 or more, got {number}")
    return number


def _non_negative_float(value: Any) -> float:
    number = _float(value)
    if not number >= 0:
        raise ValueError(f"must be 0 or more, got {number}")
    return number


def _http_url(value: Any) -> str:
    url = _optional_str(value)
    parts = urlsplit(url)
    if url and (parts.scheme not in ("https", "http") or not parts.hostname):
        raise ValueError(f"must be an http(s) URL, got {url!r}")
    return url


def _upstream_url(value: Any) -> str:
    url = _http_url(value)
    if url and "{recipient}" not in url:
        raise ValueError("must contain {recipient}, e.g. https://crm.example.com/profiles/{recipient}")
    return url


def _header_name(value: Any) -> str:
    name = _optional_str(value)
    if name and not re.fullmatch(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+", name):
        raise ValueError(f"must be an HTTP header name, got {name!r}")
    return name


def _base_url(value: Any) -> str:
    url = _str(value).rstrip("/")
    parts = urlsplit(url)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise ValueError(f"must be an absolute URL such as https://amp.example.com, got {url!r}")
    if parts.scheme == "http" and parts.hostname not in LOCAL_HOSTS:
        # Gmail only fetches https; plain http is allowed for local development only.
        raise ValueError("must use https (http is accepted only for localhost)")
    if parts.query or parts.fragment:
        raise ValueError("must not have a query string or fragment")
    return url


def _event_types_file(value: Any) -> Path | None:
    path = _optional_str(value)
    if not path:
        return None
    read_event_types(Path(path).expanduser())  # fail at start-up, not on the first webhook
    return Path(path).expanduser()


def read_event_types(path: Path) -> dict[str, Rule]:
    """The event rules: built-ins plus the custom types declared in ``path``; ``ValueError`` names it."""
    try:
        return with_custom_types(tomllib.loads(path.read_text(encoding="utf-8")))
    except OSError as exc:
        raise ValueError(f"cannot read {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"{path} is not valid TOML: {exc}") from None
    except EventTypesError as exc:
        raise ValueError(f"{path}: {exc}") from None


def event_rules(settings: Settings) -> dict[str, Rule]:
    """The event rules the server applies; ``ConfigError`` when the custom types file is unusable."""
    if settings.event_types_file is None:
        return with_custom_types({"types": {}})
    try:
        return read_event_types(settings.event_types_file)
    except ValueError as exc:
        raise ConfigError(f"setting event_types_file {exc}") from None


def _log_level(value: Any) -> str:
    level = _str(value).lower()
    if level not in LOG_LEVELS:
        raise ValueError(f"must be one of {', '.join(LOG_LEVELS)}")
    return level


FIELDS: tuple[Field, ...] = (
    Field("public_base_url", _base_url, "Public https base URL (your CDN host) used in every minted URL."),
    Field("keys_file", _path, "Key ring JSON written by `opentime keys generate`."),
    Field(
        "allowed_senders",
        _str_list,
        "AMP senders allowed to fetch: addresses, *@domain, *@*.domain, https origins (comma list).",
    ),
    Field("database_url", _str, "Profile store, e.g. sqlite:///var/opentime.db.", sensitive=True),
    Field("templates_dir", _path, "Folder of campaigns (amp_templates/<campaign>/blocks.toml)."),
    Field("static_dir", _path, "Folder of static fallback assets."),
    Field("cache_max_bytes", _positive_int, "Byte cap of the in-process cache of rendered responses."),
    Field("cache_ttl_seconds", _positive_float, "How long a rendered response is served from cache."),
    Field("negative_ttl_seconds", _positive_float, "How long an unknown recipient is remembered as unknown."),
    Field("token_ttl_days", _positive_int, "Lifetime of minted tokens (Gmail keeps AMP live 30 days)."),
    Field("default_budget_ms", _positive_int, "Open-time budget of a block that sets none, in ms."),
    Field("host", _str, "Address `opentime serve` binds to."),
    Field("port", _port, "Port `opentime serve` binds to."),
    Field("workers", _positive_int, "Number of server worker processes."),
    Field("forwarded_allow_ips", _str, "Proxies whose X-Forwarded-* headers are trusted (comma list or *)."),
    Field("log_level", _log_level, "Log level: critical, error, warning, info or debug."),
    Field("access_log", _bool, "Log every request (halves throughput; off by default)."),
    Field(
        "webhook_secrets",
        _secret_list,
        "HMAC secrets for POST /webhooks/events (comma list, newest first; empty disables webhooks).",
        sensitive=True,
    ),
    Field("webhook_tolerance_seconds", _positive_int, "Accepted age of a webhook signature's timestamp."),
    Field("webhook_max_body_bytes", _positive_int, "Largest webhook body accepted (413 beyond)."),
    Field(
        "upstream_url",
        _upstream_url,
        "Upstream profile API asked on a store miss, with {recipient} (empty: no upstream).",
    ),
    Field("upstream_auth_header", _header_name, "Header sent to the upstream, e.g. Authorization."),
    Field("upstream_auth_value", _optional_str, "Value of upstream_auth_header.", sensitive=True),
    Field("upstream_token_url", _http_url, "OAuth2 client-credentials token URL for the upstream."),
    Field("upstream_client_id", _optional_str, "OAuth2 client id for the upstream."),
    Field("upstream_client_secret", _optional_str, "OAuth2 client secret for the upstream.", sensitive=True),
    Field("upstream_scope", _optional_str, "OAuth2 scope requested for the upstream (optional)."),
    Field("upstream_connect_timeout_seconds", _positive_float, "Upstream connect timeout."),
    Field("upstream_read_timeout_seconds", _positive_float, "Upstream read timeout."),
    Field(
        "upstream_total_timeout_seconds",
        _positive_float,
        "Upstream deadline of one lookup, retries included.",
    ),
    Field("upstream_retries", _non_negative_int, "Retries of a failed upstream GET (backoff with jitter)."),
    Field("upstream_fresh_ttl_seconds", _positive_float, "How long an upstream profile is fresh."),
    Field(
        "upstream_stale_ttl_seconds",
        _non_negative_float,
        "How long after that it is still served while one refresh runs.",
    ),
    Field("upstream_negative_ttl_seconds", _positive_float, "How long an upstream 404 is remembered."),
    Field(
        "metrics_token",
        _optional_str,
        "Bearer token GET /metrics requires (empty: open, for an internal network only).",
        sensitive=True,
    ),
    Field(
        "event_types_file",
        _event_types_file,
        "TOML file of custom webhook event types (set/increment/append rules; empty: built-ins only).",
    ),
)
FIELDS_BY_NAME = {f.name: f for f in FIELDS}


def load_settings(env: Mapping[str, str], config_file: Path | None = None, **overrides: Any) -> Loaded:
    """Build settings from (lowest to highest precedence) defaults, the TOML file, env, overrides."""
    if config_file is None and env.get(CONFIG_ENV):
        config_file = Path(env[CONFIG_ENV])
    raw: dict[str, tuple[Any, str]] = {}
    if config_file is not None:
        raw.update(_read_toml(config_file))
    for field in FIELDS:
        if field.env_var in env:
            raw[field.name] = (env[field.env_var], f"env {field.env_var}")
    for name, value in overrides.items():
        if name not in FIELDS_BY_NAME:
            raise ConfigError(f"unknown setting {name!r}")
        raw[name] = (value, "command line")
    return _build(raw)


def _read_toml(path: Path) -> dict[str, tuple[Any, str]]:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
    unknown = sorted(set(data) - set(FIELDS_BY_NAME))
    if unknown:
        raise ConfigError(f"config file {path}: unknown setting(s) {', '.join(unknown)}")
    return {name: (value, f"file {path}") for name, value in data.items()}


def _build(raw: dict[str, tuple[Any, str]]) -> Loaded:
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    defaults = {f.name: f.default for f in dataclasses.fields(Settings)}
    for field in FIELDS:
        if field.name in raw:
            value, source = raw[field.name]
            values[field.name] = _parse(field, value, source)
            sources[field.name] = source
        elif defaults[field.name] is dataclasses.MISSING:
            raise ConfigError(
                f"missing setting {field.name}: set {field.env_var} or `{field.name}` in the config file"
                f" ({field.help})"
            )
        else:
            sources[field.name] = "default"
    settings = Settings(**values)
    _check_upstream(settings, sources)
    return Loaded(settings, sources)


def _check_upstream(settings: Settings, sources: dict[str, str]) -> None:
    """Upstream settings that only make sense together."""
    static = ("upstream_auth_header", "upstream_auth_value")
    oauth = ("upstream_token_url", "upstream_client_id", "upstream_client_secret")
    for group in (static, oauth):
        given = [name for name in group if getattr(settings, name)]
        if given and len(given) < len(group):
            missing = ", ".join(name for name in group if name not in given)
            raise ConfigError(f"setting {given[0]} ({sources[given[0]]}) also needs {missing}")
    if settings.upstream_auth_header and settings.upstream_token_url:
        raise ConfigError("set either upstream_auth_header/value or the upstream OAuth2 settings, not both")
    used = [f.name for f in FIELDS if f.name.startswith("upstream_") and sources[f.name] != "default"]
    if used and not settings.upstream_url:
        raise ConfigError(f"setting {used[0]} ({sources[used[0]]}) needs upstream_url")
    if settings.upstream_total_timeout_seconds < settings.upstream_connect_timeout_seconds:
        raise ConfigError("upstream_total_timeout_seconds must be >= upstream_connect_timeout_seconds")


def _parse(field: Field, value: Any, source: str) -> Any:
    try:
        return field.parse(value)
    except ValueError as exc:
        raise ConfigError(f"setting {field.name} ({source}) {exc}") from None


def masked(field: Field, value: Any) -> str:
    """Render a value for display, hiding credentials."""
    if field.sensitive and isinstance(value, tuple):
        return f"<{len(value)} secret(s)>"
    text = ", ".join(value) if isinstance(value, tuple) else "" if value is None else str(value)
    if field.sensitive and "://" not in text:
        return "<secret>" if text else ""  # a credential, not a URL with one inside
    if field.sensitive:
        parts = urlsplit(text)
        if parts.password:
            netloc = parts.netloc.replace(f":{parts.password}@", ":****@")
            return urlunsplit(parts._replace(netloc=netloc))
    return text
