"""``opentime db init``, ``upgrade`` and ``copy``: a store's schema, and moving to another store.

``init`` creates the configured store, empty, at this release's schema (the server does not: a
missing or empty database at start-up is refused, unless ``create_database``, since an empty store
where data was expected would answer every open with fallbacks and acknowledge events into it).
``upgrade`` brings the configured store's schema to this release's version.

A server (and every other command) refuses a store whose schema is older than its own, with a message
naming this command: migrating a store that several processes share is an operator's step, done
once, after a backup, not a side effect of whichever process starts first. Other commands (import,
apikeys) create a new store at the newest schema as ``init`` does.

``copy`` copies every table of one store into another, e.g. from SQLite to PostgreSQL when a second
server node needs a shared store (``app.store.copying``).
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import click

from app.cli.common import config_option, database_option, fail, say_store, store_url
from app.store import open_store
from app.store.base import StoreError
from app.store.copying import Copied, CopyError, copy_store


@click.group()
def db() -> None:
    """The profile store's schema."""


@db.command("init")
@config_option
@database_option
def init(config: Path | None, database_url: str | None) -> None:
    """Create the store (empty, at the newest schema); a store that exists is left as it is."""
    url = store_url(config, database_url)
    try:
        found, now = asyncio.run(_open_schema(url, upgrade=False))
    except (StoreError, ValueError) as exc:
        fail(str(exc))
    if found == 0:
        click.echo(f"new store created at schema version {now}")
    else:
        click.echo(f"the store exists already (schema version {found}): left as it is")


@db.command("upgrade")
@config_option
@database_option
def upgrade(config: Path | None, database_url: str | None) -> None:
    """Apply the schema migrations this release has and the store lacks (each in one transaction)."""
    url = store_url(config, database_url)
    try:
        found, now = asyncio.run(_open_schema(url, upgrade=True))
    except (StoreError, ValueError) as exc:
        fail(str(exc))
    if found == now:
        click.echo(f"schema version {now}: up to date")
    elif found == 0:
        click.echo(f"new store created at schema version {now}")
    else:
        click.echo(f"schema version {found} -> {now}: upgraded")


async def _open_schema(database_url: str, *, upgrade: bool) -> tuple[int, int]:
    store = open_store(database_url, upgrade=upgrade)
    await store.open()
    try:
        assert store.schema is not None  # set by open()
        return store.schema
    finally:
        await store.close()


@db.command("copy")
@click.option("--from", "source_url", required=True, help="The store to copy, e.g. sqlite:///opentime.db.")
@click.option("--to", "target_url", required=True, help="The store to fill, e.g. postgresql://u@host/db.")
@click.option("--batch-size", type=click.IntRange(1, 100_000), default=5000, show_default=True)
@click.option("--into-non-empty", is_flag=True, help="Copy even if the target already holds rows.")
def copy(source_url: str, target_url: str, batch_size: int, into_non_empty: bool) -> None:
    """Copy every table (profiles with field times and versions, event ids, form answers, API keys) from
    one store into another, in batches, then check the counts. Stop the servers writing to the source
    first; the target is created at the newest schema. Re-running after an interruption is safe."""
    say_store(source_url, "--from")
    say_store(target_url, "--to")
    try:
        copied = asyncio.run(_copy(source_url, target_url, batch_size, into_non_empty))
    except (StoreError, CopyError, ValueError) as exc:
        fail(str(exc))
    for c in copied:
        click.echo(f"{c.table}: {c.source_rows} rows copied ({c.target_rows} in the target)")


async def _copy(source_url: str, target_url: str, batch_size: int, into_non_empty: bool) -> list[Copied]:
    source, target = open_store(source_url), open_store(target_url)
    await source.open()
    try:
        await target.open()
        try:
            return await copy_store(
                source, target, batch_size=batch_size, into_non_empty=into_non_empty, progress=_progress
            )
        finally:
            await target.close()
    finally:
        await source.close()


def _progress(table: str, done: int, total: int) -> None:
    click.echo(f"{table}: {done}/{total}", err=True)
    sys.stderr.flush()
