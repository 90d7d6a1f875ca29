"""``opentime apikeys``: create, list and revoke the API keys that guard ``/api/``.

Exit codes: 0 success, 1 revoking a key that does not exist, 2 a usage or database error.
A revocation reaches running servers within ``app.security.apikeys.DEFAULT_CACHE_TTL_SECONDS``.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import NoReturn, TypeVar

import click

from app.config import DEFAULT_DATABASE_URL
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

database_option = click.option(
    "--database-url",
    envvar="OPENTIME_DATABASE_URL",
    default=DEFAULT_DATABASE_URL,
    show_default=True,
    help="Database holding the keys (env OPENTIME_DATABASE_URL).",
)


def fail(message: str, code: int = 2) -> NoReturn:
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


def with_store(database_url: str, action: Callable[[ApiKeyRepository], Awaitable[T]]) -> T:
    """Open the store, run ``action`` on it, close it; store and URL errors exit 2."""

    async def run() -> T:
        store = open_store(database_url)
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
def create(database_url: str, name: str, scopes: tuple[str, ...]) -> None:
    """Create a key and print it once (stdout); only its hash is stored."""
    try:
        name = check_name(name)  # scopes are already checked by click
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    key, plaintext = with_store(database_url, lambda store: create_key(store, name, scopes, time.time()))
    click.echo(f"created API key {key.key_id} ({key.name}): {', '.join(sorted(key.scopes))}", err=True)
    click.echo("warning: store this key now, it cannot be shown again", err=True)
    click.echo(plaintext)


@apikeys.command("list")
@database_option
def list_(database_url: str) -> None:
    """List keys: id, name, scopes, created, revoked (never secrets or hashes)."""
    keys = with_store(database_url, list_keys)
    click.echo("key_id\tname\tscopes\tcreated\trevoked")
    for key in keys:
        click.echo(describe(key))


@apikeys.command("revoke")
@database_option
@click.argument("key_id")
def revoke(database_url: str, key_id: str) -> None:
    """Revoke a key; running servers refuse it within the cache TTL."""
    try:
        key = with_store(database_url, lambda store: revoke_key(store, key_id, time.time()))
    except UnknownKey as exc:
        fail(str(exc), 1)
    click.echo(
        f"revoked API key {key.key_id} at {utc(key.revoked_at)}; "
        f"running servers refuse it within {DEFAULT_CACHE_TTL_SECONDS:g} s"
    )
