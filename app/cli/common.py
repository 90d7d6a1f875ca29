"""What every ``opentime`` command shares: the ``--config`` option, settings, error exits.

Commands read the same settings as ``opentime serve``, with the same precedence: defaults, then the
``--config`` file (else the file ``OPENTIME_CONFIG`` names), then ``OPENTIME_*`` variables, then a
command's explicit override flags (``--keys``, ``--database-url``, ``--base-url``, ``--templates``,
``--static``). A command that needs only some settings reads only those, so ``opentime apikeys list``
works with just ``OPENTIME_DATABASE_URL``; every setting given is still checked.

Exit codes: 0 success, 1 the operation found a problem (invalid token, invalid rows), 2 a usage or
configuration error (missing/malformed setting, unreadable key ring or campaign).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any, NoReturn

import click

from app.campaigns.loader import Campaign, load_campaigns
from app.config import FIELDS_BY_NAME, Loaded, Settings, load_setting, load_settings, masked
from app.errors import CampaignError, ConfigError
from app.security.keyring import KeyRing, KeyRingError, load_keyring

config_option = click.option(
    "--config",
    type=click.Path(path_type=Path, dir_okay=False, exists=True),
    default=None,
    help="TOML settings file (else OPENTIME_CONFIG, then OPENTIME_* variables).",
)
keys_option = click.option(
    "--keys",
    "keys_file",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="Key ring file; overrides the keys_file setting.",
)
database_option = click.option(
    "--database-url", default=None, help="Profile store URL; overrides the database_url setting."
)
templates_option = click.option(
    "--templates",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    help="Campaigns folder; overrides the templates_dir setting.",
)
static_option = click.option(
    "--static",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    help="Static fallback assets folder; overrides the static_dir setting.",
)


def fail(message: str, code: int = 2) -> NoReturn:
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


def read_loaded(config: Path | None, **overrides: Any) -> Loaded:
    """Every setting, as ``serve`` reads them; a configuration error exits 2."""
    try:
        return load_settings(os.environ, config, **overrides)
    except ConfigError as exc:
        fail(str(exc))


def read_settings(config: Path | None, **overrides: Any) -> Settings:
    return read_loaded(config, **overrides).settings


def read_setting(name: str, config: Path | None, override: Any = None, *, needed: bool = True) -> Any:
    """One setting (``override`` wins when given), or None when it is not ``needed`` and not set."""
    return read_sourced(name, config, override, needed=needed)[0]


def read_sourced(
    name: str, config: Path | None, override: Any = None, *, needed: bool = True
) -> tuple[Any, str]:
    overrides = {} if override is None else {name: override}
    try:
        return load_setting(name, os.environ, config, needed=needed, **overrides)
    except ConfigError as exc:
        fail(str(exc))


def store_url(config: Path | None, override: str | None) -> str:
    """The configured profile store, announced on stderr so nobody loads data into the wrong one."""
    url, source = read_sourced("database_url", config, override)
    say_store(url, source)
    return str(url)


def say_store(url: str, source: str) -> None:
    click.echo(f"store: {masked(FIELDS_BY_NAME['database_url'], url)} ({source})", err=True)


def keys_path(config: Path | None, override: Path | None) -> Path:
    path: Path = read_setting("keys_file", config, override)
    return path


def read_ring(path: Path) -> KeyRing:
    try:
        return load_keyring(path)
    except KeyRingError as exc:
        fail(str(exc))


def read_campaigns(
    config: Path | None, templates: Path | None, static: Path | None, public_base_url: str
) -> dict[str, Campaign]:
    """The campaigns ``serve`` would load (``--templates``/``--static`` override the folders)."""
    folders = (read_setting("templates_dir", config, templates), read_setting("static_dir", config, static))
    budget = read_setting("default_budget_ms", config)
    try:
        return load_campaigns(*folders, default_budget_ms=budget, public_base_url=public_base_url)
    except CampaignError as exc:
        fail(str(exc))


def pick_campaign(campaigns: dict[str, Campaign], name: str) -> Campaign:
    if name not in campaigns:
        fail(f"unknown campaign {name!r} (known: {', '.join(sorted(campaigns)) or 'none'})")
    return campaigns[name]
