"""One strict settings object, read from ``OPENTIME_*`` environment variables and/or a TOML file.

Every setting is declared once, as one field of ``Settings``: its name, type and default, plus an
``About`` record (parser, help, whether it is a secret, which upstream client argument it feeds).
``FIELDS`` is read from that table, so the loader, ``opentime check-config``, the secret masking and
the upstream client configuration cannot disagree. Casting is strict (a bool is true/false/1/0) and
a missing or malformed value raises ``ConfigError`` naming the setting and where it came from. There
is no default secret: the key ring file and the sender allowlist must be given (``--demo`` makes its
own).
"""

from __future__ import annotations

import dataclasses
import re
import tomllib
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from app.errors import ConfigError
from app.ingest.event_types import EventTypesError, with_custom_types
from app.ingest.events import Rule
from app.limits.rate import Rate, parse_rate
from app.shipped import shipped

ENV_PREFIX = "OPENTIME_"
CONFIG_ENV = "OPENTIME_CONFIG"
PROJECT_ROOT = Path(__file__).resolve().parent.parent
LOCAL_HOSTS = frozenset({"localhost", "127.0.0.1", "::1", "[::1]"})
LOG_LEVELS = ("critical", "error", "warning", "info", "debug")
LOG_FORMATS = ("text", "json")
MIN_SECRET_LENGTH = 16
DATABASE_TIMEOUT_MS = 5000
DATABASE_POOL_SIZE = 10


class _Required:
    def __repr__(self) -> str:
        return "<required>"


REQUIRED: Any = _Required()


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
    return Path(value if isinstance(value, Path) else _str(value)).expanduser()


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


def _fraction(value: Any) -> float:
    number = _float(value)
    if not 0 <= number <= 1:
        raise ValueError(f"must be between 0 and 1, got {number}")
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


def _redis_url(value: Any) -> str:
    url = _optional_str(value)
    parts = urlsplit(url)
    if url and (parts.scheme not in ("redis", "rediss") or not parts.hostname):
        raise ValueError(f"must be a redis://host:port/db URL, got {masked_url(url)!r}")
    if url and parts.path.strip("/") and not parts.path.strip("/").isdigit():
        raise ValueError("must name the database as a number, e.g. redis://127.0.0.1:6379/0")
    return url


def _amqp_url(value: Any) -> str:
    url = _optional_str(value)
    parts = urlsplit(url)
    if url and (parts.scheme not in ("amqp", "amqps") or not parts.hostname):
        raise ValueError(
            "must be an amqp:// or amqps:// URL such as amqp://user:password@rabbitmq:5672/vhost,"
            f" got {masked_url(url)!r}"
        )
    return url


def _queue_name(value: Any) -> str:
    name = _optional_str(value)
    if len(name.encode()) > 250 or name.startswith("amq.") or any(c.isspace() for c in name):
        # 250, not 255: the dead-letter queue's name adds ".dead".
        raise ValueError("must be a queue name of at most 250 bytes, without spaces, not starting amq.")
    return name


def _prefetch(value: Any) -> int:
    number = _positive_int(value)
    if number > 10_000:
        raise ValueError(f"must be at most 10000, got {number}")
    return number


def _key_prefix(value: Any) -> str:
    prefix = _str(value)
    if len(prefix) > 64 or any(c.isspace() for c in prefix):
        raise ValueError("must be at most 64 characters without spaces, e.g. opentime:prod:")
    return prefix


def _log_level(value: Any) -> str:
    level = _str(value).lower()
    if level not in LOG_LEVELS:
        raise ValueError(f"must be one of {', '.join(LOG_LEVELS)}")
    return level


def _log_format(value: Any) -> str:
    name = _str(value).lower()
    if name not in LOG_FORMATS:
        raise ValueError(f"must be one of {', '.join(LOG_FORMATS)}")
    return name


# --- the settings table: one field per setting ---


@dataclass(frozen=True, slots=True)
class About:
    """What a setting's field in ``Settings`` does not say itself: how to parse it and what it is for."""

    parse: Callable[[Any], Any]
    help: str
    sensitive: bool = False
    upstream: str = ""  # the ``UpstreamConfig`` argument this setting feeds, if any


def about(
    parse: Callable[[Any], Any], help: str, *, sensitive: bool = False, upstream: str = ""
) -> dict[str, About]:
    """Field metadata for ``Settings`` (see ``About``)."""
    return {"about": About(parse, help, sensitive, upstream)}


@dataclass(frozen=True, slots=True, repr=False)
class Settings:
    public_base_url: str = field(
        metadata=about(_base_url, "Public https base URL (your CDN host) used in every minted URL.")
    )
    keys_file: Path = field(metadata=about(_path, "Key ring JSON written by `opentime keys generate`."))
    allowed_senders: tuple[str, ...] = field(
        metadata=about(
            _str_list,
            "AMP senders allowed to fetch: addresses, *@domain, *@*.domain, https origins (comma list).",
        )
    )
    database_url: str = field(
        default=f"sqlite:///{PROJECT_ROOT / 'opentime.db'}",
        metadata=about(
            _str,
            "Profile store: sqlite:///var/opentime.db or postgresql://user:password@host:5432/db.",
            sensitive=True,
        ),
    )
    create_database: bool = field(
        default=False,
        metadata=about(
            _bool,
            "Let `opentime serve` create an empty store when the database is missing (false: refuse"
            " to start; create it with `opentime db init`).",
        ),
    )
    database_timeout_ms: int = field(
        default=DATABASE_TIMEOUT_MS,
        metadata=about(
            _positive_int,
            "PostgreSQL: deadline of one store operation (connecting, queries), after which it fails.",
        ),
    )
    database_pool_size: int = field(
        default=DATABASE_POOL_SIZE,
        metadata=about(_positive_int, "PostgreSQL: most connections one process opens."),
    )
    retention_days: int = field(
        default=0,
        metadata=about(
            _non_negative_int,
            "Delete webhook event ids and amp-form answers stored more than this many days ago"
            " (0: keep them forever). Profiles are kept until erased.",
        ),
    )
    retention_interval_seconds: float = field(
        default=3600.0,
        metadata=about(
            _positive_float,
            "How often a server runs the retention pass (one process of all sharing the store does it).",
        ),
    )
    exposure_sample_rate: float = field(
        default=1.0,
        metadata=about(
            _fraction,
            "Share of opens recorded for reports (0 to 1; each counts 1/rate); clicks are always recorded.",
        ),
    )
    exposure_flush_seconds: float = field(
        default=2.0,
        metadata=about(_positive_float, "How often a server adds the exposures it buffered to the store."),
    )
    exposure_buffer: int = field(
        default=50_000,
        metadata=about(
            _positive_int,
            "Exposures a server process holds between flushes; more are dropped (and counted).",
        ),
    )
    templates_dir: Path = field(
        default=shipped("amp_templates"),
        metadata=about(_path, "Folder of campaigns (amp_templates/<campaign>/blocks.toml)."),
    )
    static_dir: Path = field(
        default=shipped("static"), metadata=about(_path, "Folder of static fallback assets.")
    )
    cache_max_bytes: int = field(
        default=32 * 1024 * 1024,
        metadata=about(_positive_int, "Byte cap of the in-process cache of rendered responses."),
    )
    image_cache_max_bytes: int = field(
        default=32 * 1024 * 1024,
        metadata=about(
            _positive_int,
            "Byte cap of the in-process cache of rendered images (each recipient's latest render).",
        ),
    )
    cache_ttl_seconds: float = field(
        default=300.0,
        metadata=about(_positive_float, "How long a rendered response is served from cache."),
    )
    negative_ttl_seconds: float = field(
        default=30.0,
        metadata=about(_positive_float, "How long an unknown recipient is remembered as unknown."),
    )
    token_ttl_days: int = field(
        default=31,
        metadata=about(_positive_int, "Lifetime of minted tokens (Gmail keeps AMP live 30 days)."),
    )
    default_budget_ms: int = field(
        default=150, metadata=about(_positive_int, "Open-time budget of a block that sets none, in ms.")
    )
    image_render_processes: int = field(
        default=0,
        metadata=about(
            _non_negative_int,
            "Image render worker processes per server worker (0: the CPUs the server may use, shared"
            " among its workers).",
        ),
    )
    image_render_queue: int = field(
        default=32,
        metadata=about(
            _positive_int,
            "Image renders in flight or waiting per render process; one more gets the block's fallback"
            " at once (render-queue-full).",
        ),
    )
    image_render_backlog: int = field(
        default=10_000,
        metadata=about(
            _non_negative_int,
            "Image renders refused by image_render_queue kept to run when a render process is idle, so"
            " the next open is personal (0: none kept).",
        ),
    )
    host: str = field(default="127.0.0.1", metadata=about(_str, "Address `opentime serve` binds to."))
    port: int = field(default=8000, metadata=about(_port, "Port `opentime serve` binds to."))
    workers: int = field(default=1, metadata=about(_positive_int, "Number of server worker processes."))
    forwarded_allow_ips: str = field(
        default="127.0.0.1",
        metadata=about(_str, "Proxies whose X-Forwarded-* headers are trusted (comma list or *)."),
    )
    log_level: str = field(
        default="info", metadata=about(_log_level, "Log level: critical, error, warning, info or debug.")
    )
    log_format: str = field(
        default="text",
        metadata=about(
            _log_format,
            "Log lines as text (for a terminal) or json (one object a line with ts, level, logger,"
            " message, request_id and fields: for log collectors).",
        ),
    )
    access_log: bool = field(
        default=False, metadata=about(_bool, "Log every request (halves throughput; off by default).")
    )
    request_read_timeout_seconds: float = field(
        default=10.0,
        metadata=about(
            _positive_float,
            "Deadline to receive a whole request, headers and body (408 and closed after; also idle"
            " new connections).",
        ),
    )
    max_connections: int = field(
        default=1000,
        metadata=about(
            _positive_int, "Open connections one worker keeps; one more is answered 503 and closed."
        ),
    )
    # Bounds of the work behind the open-time budget (README "Hardening"): one more is not queued, its
    # open gets the fallback with reason "overloaded" at once.
    max_pending_store_reads: int = field(
        default=10_000,
        metadata=about(
            _positive_int,
            "Profile reads one worker queues for the store (recipients queued or being read); one more"
            " is not queued: fallback, reason overloaded.",
        ),
    )
    webhook_secrets: tuple[str, ...] = field(
        default=(),
        metadata=about(
            _secret_list,
            "HMAC secrets for POST /webhooks/events (comma list, newest first; empty disables webhooks).",
            sensitive=True,
        ),
    )
    webhook_tolerance_seconds: int = field(
        default=300, metadata=about(_positive_int, "Accepted age of a webhook signature's timestamp.")
    )
    webhook_max_body_bytes: int = field(
        default=1024 * 1024, metadata=about(_positive_int, "Largest webhook body accepted (413 beyond).")
    )
    webhook_concurrent_bodies: int = field(
        default=32,
        metadata=about(
            _positive_int,
            "Webhook bodies one worker reads at once (each up to webhook_max_body_bytes); one more: 503.",
        ),
    )
    upstream_url: str = field(
        default="",
        metadata=about(
            _upstream_url,
            "Upstream profile API asked on a store miss, with {recipient} (empty: no upstream).",
        ),
    )
    upstream_auth_header: str = field(
        default="", metadata=about(_header_name, "Header sent to the upstream, e.g. Authorization.")
    )
    upstream_auth_value: str = field(
        default="", metadata=about(_optional_str, "Value of upstream_auth_header.", sensitive=True)
    )
    upstream_token_url: str = field(
        default="", metadata=about(_http_url, "OAuth2 client-credentials token URL for the upstream.")
    )
    upstream_client_id: str = field(
        default="", metadata=about(_optional_str, "OAuth2 client id for the upstream.")
    )
    upstream_client_secret: str = field(
        default="",
        metadata=about(_optional_str, "OAuth2 client secret for the upstream.", sensitive=True),
    )
    upstream_scope: str = field(
        default="", metadata=about(_optional_str, "OAuth2 scope requested for the upstream (optional).")
    )
    upstream_connect_timeout_seconds: float = field(
        default=0.5,
        metadata=about(_positive_float, "Upstream connect timeout.", upstream="connect_timeout_s"),
    )
    upstream_read_timeout_seconds: float = field(
        default=2.0, metadata=about(_positive_float, "Upstream read timeout.", upstream="read_timeout_s")
    )
    upstream_total_timeout_seconds: float = field(
        default=5.0,
        metadata=about(
            _positive_float, "Upstream deadline of one lookup, retries included.", upstream="total_timeout_s"
        ),
    )
    upstream_retries: int = field(
        default=2,
        metadata=about(
            _non_negative_int, "Retries of a failed upstream GET (backoff with jitter).", upstream="retries"
        ),
    )
    upstream_fresh_ttl_seconds: float = field(
        default=60.0,
        metadata=about(_positive_float, "How long an upstream profile is fresh.", upstream="fresh_ttl_s"),
    )
    upstream_stale_ttl_seconds: float = field(
        default=3600.0,
        metadata=about(
            _non_negative_float,
            "How long after that it is still served while one refresh runs.",
            upstream="stale_ttl_s",
        ),
    )
    upstream_negative_ttl_seconds: float = field(
        default=30.0,
        metadata=about(_positive_float, "How long an upstream 404 is remembered.", upstream="negative_ttl_s"),
    )
    upstream_max_fetches: int = field(
        default=100,
        metadata=about(
            _positive_int,
            "Upstream fetches one worker runs at once (a hung upstream holds each until its total timeout);"
            " one more is not started: fallback, reason overloaded.",
            upstream="max_fetches",
        ),
    )
    metrics_token: str = field(
        default="",
        metadata=about(
            _optional_str,
            "Bearer token GET /metrics requires (empty: open, for an internal network only).",
            sensitive=True,
        ),
    )
    rate_limit_api: Rate = field(
        default=Rate(200.0, 1000),
        metadata=about(
            parse_rate,
            'Requests one API key may make to /api/*: "N/s burst M" (or N/min; 0: no limit); 429 beyond.',
        ),
    )
    rate_limit_webhooks: Rate = field(
        default=Rate(1000.0, 5000),
        metadata=about(
            parse_rate,
            "Requests (batches, not events) one webhook secret may make to /webhooks/*, counted after"
            ' the signature is checked: "N/s burst M" (0: no limit).',
        ),
    )
    rate_limit_preview: Rate = field(
        default=Rate(5.0, 20),
        metadata=about(parse_rate, 'Preview pages one API key may load: "N/s burst M" (0: no limit).'),
    )
    event_types_file: Path | None = field(
        default=None,
        metadata=about(
            _event_types_file,
            "TOML file of custom webhook event types (set/increment/append rules; empty: built-ins only).",
        ),
    )

    # Open-time decisions (app.decisions): the open's country, and what clicks are answered from.
    country_header: str = field(
        default="",
        metadata=about(
            _header_name,
            "Request header a trusted CDN sets to the viewer's ISO 3166 country, e.g."
            " CloudFront-Viewer-Country (empty: country rules never match).",
        ),
    )
    click_memory_seconds: float = field(
        default=3600.0,
        metadata=about(_positive_float, "How long what an open showed is kept to answer its clicks."),
    )
    click_memory_entries: int = field(
        default=100_000,
        metadata=about(_positive_int, "Opens (recipient and block) kept in-process to answer clicks."),
    )

    redis_url: str = field(
        default="",
        metadata=about(
            _redis_url,
            "Redis shared tier (profiles, invalidation fan-out, webhook replay guard), e.g."
            " redis://127.0.0.1:6379/0 (empty: single process, no Redis).",
            sensitive=True,
        ),
    )
    redis_key_prefix: str = field(
        default="opentime:",
        metadata=about(
            _key_prefix, "Prefix of every Redis key and channel: one per deployment sharing a Redis."
        ),
    )
    redis_timeout_ms: int = field(
        default=50,
        metadata=about(_positive_int, "Deadline of one Redis operation, in ms (then the store answers)."),
    )
    redis_profile_ttl_seconds: float = field(
        default=600.0,
        metadata=about(_positive_float, "How long a profile read from the store is kept in Redis."),
    )

    ingest_url: str = field(
        default="",
        metadata=about(
            _amqp_url,
            "Broker the server consumes events from, beside serving, e.g. amqp://user:password@host:5672/"
            " (empty: no stream ingest; `opentime ingest` is the stand-alone consumer).",
            sensitive=True,
        ),
    )
    ingest_queue: str = field(
        default="",
        metadata=about(_queue_name, "Durable queue consumed with ingest_url; poison goes to <queue>.dead."),
    )
    ingest_prefetch: int = field(
        default=100,
        metadata=about(_prefetch, "Messages a server process holds unacknowledged at once (ingest_url)."),
    )

    def replace(self, **changes: Any) -> Settings:
        return dataclasses.replace(self, **changes)

    def __repr__(self) -> str:
        # Secrets (and a password inside database_url) never reach logs or tracebacks.
        shown = (
            f"{f.name}={masked(f, getattr(self, f.name)) if f.sensitive else getattr(self, f.name)!r}"
            for f in FIELDS
        )
        return f"Settings({', '.join(shown)})"


@dataclass(frozen=True, slots=True)
class Field:
    """One row of the settings table, as the loader and ``opentime check-config`` read it."""

    name: str
    parse: Callable[[Any], Any]
    help: str
    sensitive: bool
    default: Any  # REQUIRED when the setting must be given
    upstream: str

    @property
    def env_var(self) -> str:
        return ENV_PREFIX + self.name.upper()

    @property
    def required(self) -> bool:
        return self.default is REQUIRED


def _row(spec: dataclasses.Field[Any]) -> Field:
    info: About = spec.metadata["about"]
    default = REQUIRED if spec.default is dataclasses.MISSING else spec.default
    return Field(spec.name, info.parse, info.help, info.sensitive, default, info.upstream)


FIELDS: tuple[Field, ...] = tuple(_row(spec) for spec in dataclasses.fields(Settings))
FIELDS_BY_NAME = {f.name: f for f in FIELDS}


@dataclass(frozen=True, slots=True)
class Loaded:
    """Settings plus, for each field, where its value came from."""

    settings: Settings
    sources: dict[str, str]


def load_settings(env: Mapping[str, str], config_file: Path | None = None, **overrides: Any) -> Loaded:
    """Build settings from (lowest to highest precedence) defaults, the TOML file, env, overrides.

    The file is ``config_file``, else the one ``OPENTIME_CONFIG`` in ``env`` names.
    """
    values, sources = _resolve(_given(env, config_file, overrides), FIELDS_BY_NAME)
    settings = Settings(**values)
    _check_upstream(settings, sources)
    _check_redis(settings, sources)
    _check_ingest(settings, sources)
    return Loaded(settings, sources)


def load_setting(
    name: str,
    env: Mapping[str, str],
    config_file: Path | None = None,
    *,
    needed: bool = True,
    **overrides: Any,
) -> tuple[Any, str]:
    """One setting and its source, from the same places and with the same precedence as
    ``load_settings``, for commands that need only it; every setting given is still checked.

    A required setting that is not set is an error when ``needed``, else ``(None, "not set")``.
    """
    values, sources = _resolve(_given(env, config_file, overrides), (name,) if needed else ())
    return values.get(name), sources.get(name, "not set")


def _given(
    env: Mapping[str, str], config_file: Path | None, overrides: Mapping[str, Any]
) -> dict[str, tuple[Any, str]]:
    """Each given setting's raw value and source, the highest-precedence one winning."""
    if config_file is None and env.get(CONFIG_ENV):
        config_file = Path(env[CONFIG_ENV])
    raw: dict[str, tuple[Any, str]] = {}
    if config_file is not None:
        raw.update(_read_toml(config_file))
    for row in FIELDS:
        if row.env_var in env:
            raw[row.name] = (env[row.env_var], f"env {row.env_var}")
    for name, value in overrides.items():
        if name not in FIELDS_BY_NAME:
            raise ConfigError(f"unknown setting {name!r}")
        raw[name] = (value, "command line")
    return raw


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


def _resolve(
    raw: dict[str, tuple[Any, str]], needed: Collection[str]
) -> tuple[dict[str, Any], dict[str, str]]:
    """Parse every given setting and default the others; a ``needed`` required one must be given."""
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for row in FIELDS:
        if row.name in raw:
            value, source = raw[row.name]
            values[row.name], sources[row.name] = _parse(row, value, source), source
        elif row.required and row.name in needed:
            raise ConfigError(
                f"missing setting {row.name}: set {row.env_var} or `{row.name}` in the config file"
                f" ({row.help})"
            )
        elif not row.required:
            values[row.name], sources[row.name] = row.default, "default"
    return values, sources


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


def check_serving(settings: Settings) -> None:
    """Rules for ``opentime serve`` (checked by it and by ``check-config``, not by other commands)."""
    if settings.workers > 1 and not settings.redis_url:
        # Each worker would keep its own replay guard (a replayed webhook lands on another worker and
        # is applied again) and forget cached renders only in itself (others serve the old data).
        raise ConfigError(
            f"workers = {settings.workers} needs redis_url: the webhook replay guard and cache"
            " invalidation must be shared between worker processes; set redis_url or run workers = 1"
        )


def _check_redis(settings: Settings, sources: dict[str, str]) -> None:
    tunables = [f.name for f in FIELDS if f.name.startswith("redis_") and f.name != "redis_url"]
    used = [name for name in tunables if sources[name] != "default"]
    if used and not settings.redis_url:
        raise ConfigError(f"setting {used[0]} ({sources[used[0]]}) needs redis_url")


def _check_ingest(settings: Settings, sources: dict[str, str]) -> None:
    if settings.ingest_url and not settings.ingest_queue:
        raise ConfigError(f"setting ingest_url ({sources['ingest_url']}) also needs ingest_queue")
    used = [name for name in ("ingest_queue", "ingest_prefetch") if sources[name] != "default"]
    if used and not settings.ingest_url:
        raise ConfigError(f"setting {used[0]} ({sources[used[0]]}) needs ingest_url")


def _parse(row: Field, value: Any, source: str) -> Any:
    try:
        return row.parse(value)
    except ValueError as exc:
        raise ConfigError(f"setting {row.name} ({source}) {exc}") from None


def masked(row: Field, value: Any) -> str:
    """Render a value for display, hiding credentials."""
    if row.sensitive and isinstance(value, tuple):
        return f"<{len(value)} secret(s)>"
    text = ", ".join(value) if isinstance(value, tuple) else "" if value is None else str(value)
    if row.sensitive and "://" not in text:
        return "<secret>" if text else ""  # a credential, not a URL with one inside
    return masked_url(text) if row.sensitive else text


def masked_url(text: str) -> str:
    """``text`` with the passwords of its URL, if any, replaced by ``****``: the user-info one and the
    ``password`` / ``sslpassword`` query parameters (libpq and asyncpg take a password there too)."""
    parts = urlsplit(text)
    netloc, query = parts.netloc, _SECRET_QUERY.sub(r"\1\2=****", parts.query)
    if parts.password:
        netloc = netloc.replace(f":{parts.password}@", ":****@")
    if (netloc, query) == (parts.netloc, parts.query):
        return text
    return urlunsplit(parts._replace(netloc=netloc, query=query))


_SECRET_QUERY = re.compile(r"(^|[&;])((?:ssl)?password)=[^&;]*", re.IGNORECASE)
