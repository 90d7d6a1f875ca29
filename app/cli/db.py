"""``opentime db upgrade``: bring the configured store's schema to this release's version.

A server (and every other command) refuses a store whose schema is older than its own, with a message
naming this command: migrating a store that several processes share is an operator's step, done
once, after a backup, not a side effect of whichever process starts first. A new, empty store needs
no step: it is created at the newest schema.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import click

from app.cli.common import config_option, database_option, fail, store_url
from app.store import open_store
from app.store.base import StoreError


@click.group()
def db() -> None:
    """The profile store's schema."""


@db.command("upgrade")
@config_option
@database_option
def upgrade(config: Path | None, database_url: str | None) -> None:
    """Apply the schema migrations this release has and the store lacks (each in one transaction)."""
    url = store_url(config, database_url)
    try:
        found, now = asyncio.run(_upgrade(url))
    except (StoreError, ValueError) as exc:
        fail(str(exc))
    if found == now:
        click.echo(f"schema version {now}: up to date")
    elif found == 0:
        click.echo(f"new store created at schema version {now}")
    else:
        click.echo(f"schema version {found} -> {now}: upgraded")


async def _upgrade(database_url: str) -> tuple[int, int]:
    store = open_store(database_url, upgrade=True)
    await store.open()
    try:
        assert store.schema is not None  # set by open()
        return store.schema
    finally:
        await store.close()
