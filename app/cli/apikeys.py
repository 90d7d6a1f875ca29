"""``opentime apikeys``: create, list and revoke the API keys that guard ``/api/``.

Keys live in the store of the ``database_url`` setting, the one ``opentime serve`` reads
(``--database-url`` overrides it); each command names that store on stderr.
Exit codes: 0 success, 1 revoking a key that does not exist, 2 a usage or database error.
A revocation reaches running servers within ``app.security.apikeys.DEFAULT_CACHE_TTL_SECONDS``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar

import click

from app.cli.common import config_option, database_option, fail, store_url
from app.security.apikeys import (
    DEFAULT_CACHE_TTL_SECONDS,
    SCOPES,
    ApiKey,
    UnknownKey,
    check_name,
    create_key,
    list_keys,
    revoke_key,
)
from app.store import open_store
from app.store.base import ApiKeyRepository, StoreError

T = TypeVar("T")


def with_store(
    config: Path | None, database_url: str | None, action: Callable[[ApiKeyRepository], Awaitable[T]]
) -> T:
    """Open the configured store (``database_url`` overrides it), run ``action`` on it, close it;
    store and URL errors exit 2."""
    url = store_url(config, database_url)

    async def run() -> T:
        store = open_store(url)
        await store.open()
        try:
            return await action(store.api_keys)
        finally:
            await store.close()

    try:
        return asyncio.run(run())
    except (StoreError, ValueError) as exc:
        fail(str(exc))


def utc(moment: float | None) -> str:
    if moment is None:
        return "-"
    return datetime.fromtimestamp(moment, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def describe(key: ApiKey) -> str:
    scopes = ",".join(sorted(key.scopes))
    return "\t".join((key.key_id, key.name, scopes, utc(key.created_at), utc(key.revoked_at)))


@click.group()
def apikeys() -> None:
    """Create, list and revoke API keys for /api/ (admin implies every scope)."""


@apikeys.command("create")
@config_option
@database_option
@click.option("--name", required=True, help="What the key is for, e.g. the calling system.")
@click.option(
    "--scope",
    "scopes",
    type=click.Choice(sorted(SCOPES)),
    multiple=True,
    required=True,
    help="A scope to grant; repeat for several.",
)
def create(config: Path | None, database_url: str | None, name: str, scopes: tuple[str, ...]) -> None:
    """Create a key and print it once (stdout); only its hash is stored."""
    try:
        name = check_name(name)  # scopes are already checked by click
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    key, plaintext = with_store(
        config, database_url, lambda store: create_key(store, name, scopes, time.time())
    )
    click.echo(f"created API key {key.key_id} ({key.name}): {', '.join(sorted(key.scopes))}", err=True)
    click.echo("warning: store this key now, it cannot be shown again", err=True)
    click.echo(plaintext)


@apikeys.command("list")
@config_option
@database_option
def list_(config: Path | None, database_url: str | None) -> None:
    """List keys: id, name, scopes, created, revoked (never secrets or hashes)."""
    keys = with_store(config, database_url, list_keys)
    click.echo("key_id\tname\tscopes\tcreated\trevoked")
    for key in keys:
        click.echo(describe(key))


@apikeys.command("revoke")
@config_option
@database_option
@click.argument("key_id")
def revoke(config: Path | None, database_url: str | None, key_id: str) -> None:
    """Revoke a key; running servers refuse it within the cache TTL."""
    try:
        key = with_store(config, database_url, lambda store: revoke_key(store, key_id, time.time()))
    except UnknownKey as exc:
        fail(str(exc), 1)
    click.echo(
        f"revoked API key {key.key_id} at {utc(key.revoked_at)}; "
        f"running servers refuse it within {DEFAULT_CACHE_TTL_SECONDS:g} s"
    )
