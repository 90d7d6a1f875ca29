"""``opentime erase``, ``opentime erasures`` and ``opentime retention run``: privacy requests by hand.

``erase`` removes recipients from the configured store as ``DELETE /api/customers/{id}`` does, with
``requested_by`` "cli" in the erasure records; with ``redis_url`` set, it announces them through Redis
(tombstones, then the invalidation channel) so every server drops what it cached of them. Without
Redis it cannot reach a server's memory: servers serve what they cached for at most
``cache_ttl_seconds`` more (the API drops it at once). ``erasures`` shows the records of given ids
(an auditor's check). ``retention run`` is the server's periodic retention pass, now (for cron).

All three need an existing store (they never create one) and print no recipient id on stderr.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TextIO

import click

from app.cli.common import config_option, database_option, fail, read_setting, store_url
from app.cli.import_profiles import shared_config
from app.content.invalidation import Invalidation
from app.privacy.erasure import CLI, Eraser
from app.privacy.export import iso
from app.privacy.records import check_id
from app.privacy.retention import DAY_S, TASK, expire_old
from app.shared.config import RedisConfig
from app.store import open_store
from app.store.base import Erasure, RetentionTable, Store, StoreError

file_option = click.option(
    "--file",
    "id_file",
    type=click.File("r", encoding="utf-8"),
    default=None,
    help="Read recipient ids from this file, one per line ('-': standard input); blank lines are skipped.",
)


@click.command("erase")
@config_option
@database_option
@file_option
@click.argument("ids", nargs=-1)
def erase(
    config: Path | None, database_url: str | None, id_file: TextIO | None, ids: tuple[str, ...]
) -> None:
    """Erase recipients: profile, event ids, form answers and every cached render (idempotent)."""
    wanted = read_ids(ids, id_file)
    url = store_url(config, database_url)
    redis = shared_config(config)
    try:
        asyncio.run(_erase_all(url, wanted, redis))
    except (StoreError, ValueError) as exc:
        fail(str(exc))
    if redis is None:
        ttl = read_setting("cache_ttl_seconds", config)
        click.echo(
            f"note: no redis_url: running servers may serve what they cached of these recipients for up"
            f" to {ttl:g}s (DELETE /api/customers/{{id}} drops it at once)",
            err=True,
        )


@click.command("erasures")
@config_option
@database_option
@file_option
@click.argument("ids", nargs=-1)
def erasures(
    config: Path | None, database_url: str | None, id_file: TextIO | None, ids: tuple[str, ...]
) -> None:
    """Show the erasure records of recipient ids (exit 1 when some id has none)."""
    wanted = read_ids(ids, id_file)
    url = store_url(config, database_url)
    try:
        found = asyncio.run(_records(url, wanted))
    except (StoreError, ValueError) as exc:
        fail(str(exc))
    for recipient, records in zip(wanted, found, strict=True):
        if not records:
            click.echo(f"{recipient}: no erasure recorded")
        for record in records:
            click.echo(
                f"{recipient}: erased {iso(record.erased_at)} by {record.requested_by} ({_summary(record)})"
            )
    sys.exit(0 if all(found) else 1)


@click.group()
def retention() -> None:
    """The retention limit on event ids, form answers and exposure counters (retention_days)."""


@retention.command("run")
@config_option
@database_option
@click.option(
    "--days", type=click.IntRange(min=1), default=None, help="Overrides the retention_days setting."
)
def run(config: Path | None, database_url: str | None, days: int | None) -> None:
    """Delete event ids, form answers and exposure counters older than retention_days, now, in short
    batches."""
    limit: int = days if days is not None else read_setting("retention_days", config)
    if limit <= 0:
        click.echo("retention_days is 0: events and form answers are kept forever; nothing deleted")
        return
    url = store_url(config, database_url)
    try:
        counts = asyncio.run(_expire(url, limit))
    except (StoreError, ValueError) as exc:
        fail(str(exc))
    click.echo(
        f"deleted {counts['events']} event id(s), {counts['form_submissions']} form answer(s) and"
        f" {counts['exposures']} exposure counter(s) stored more than {limit} day(s) ago"
    )


def read_ids(ids: Iterable[str], id_file: TextIO | None) -> list[str]:
    """The ids of the arguments, then of the file, each checked (exit 2 naming where a bad one is)."""
    wanted: list[tuple[str, str]] = [(f"argument {n}", value) for n, value in enumerate(ids, 1)]
    if id_file is not None:
        lines = (line.rstrip("\r\n") for line in id_file)
        wanted += [(f"line {n}", line) for n, line in enumerate(lines, 1) if line.strip()]
    if not wanted:
        fail("give recipient ids as arguments or with --file")
    for where, value in wanted:
        try:
            check_id(value)
        except ValueError as exc:
            fail(f"{where}: {exc}")  # where, not the value: it may be personal data
    return list(dict.fromkeys(value for _, value in wanted))


@asynccontextmanager
async def _existing(database_url: str) -> AsyncIterator[Store]:
    store = open_store(database_url, create=False)  # a typo in the URL must not "erase" from a new store
    await store.open()
    try:
        yield store
    finally:
        await store.close()


async def _erase_all(database_url: str, ids: list[str], redis: RedisConfig | None) -> None:
    async with _existing(database_url) as store:
        if redis is None:
            await _erase_with(store, ids, None)
            return
        from app.shared.tier import announcer  # only with Redis: see app.shared.config

        async with announcer(redis) as invalidation:
            await _erase_with(store, ids, invalidation)
        if invalidation.backlog:
            click.echo(
                f"warning: Redis did not answer: {invalidation.backlog} erased recipient(s) not announced;"
                " servers drop what they cached of them once their caches expire (cache_ttl_seconds)",
                err=True,
            )


async def _erase_with(store: Store, ids: list[str], invalidation: Invalidation | None) -> None:
    eraser = Eraser(store.privacy, invalidation)
    records: list[Erasure] = []
    with click.progressbar(length=len(ids), label="erasing", file=sys.stderr) as bar:
        for recipient in ids:
            try:
                records.append(await eraser.erase(recipient, CLI))
            except StoreError as exc:
                raise StoreError(f"{exc} (after {len(records)} of {len(ids)} erased)") from None
            bar.update(1)
    if len(records) == 1:
        click.echo(f"erased: {_summary(records[0])}")
        return
    click.echo(
        f"erased {len(records)} recipient(s): {sum(r.profiles for r in records)} profile(s),"
        f" {sum(r.events for r in records)} event id(s), {sum(r.form_answers for r in records)}"
        " form answer(s) removed"
    )


async def _records(database_url: str, ids: list[str]) -> list[list[Erasure]]:
    async with _existing(database_url) as store:
        eraser = Eraser(store.privacy, None)
        return [await eraser.records(recipient) for recipient in ids]


async def _expire(database_url: str, days: int) -> dict[RetentionTable, int]:
    async with _existing(database_url) as store:
        now = time.time()
        await store.privacy.claim(TASK, now, 0.0)  # servers skip this period: it is done
        click.echo(f"deleting what was stored before {iso(now - days * DAY_S)}", err=True)
        progress = _Progress()
        counts = await expire_old(store.privacy, days, now, deleted=progress.deleted)
        if progress.counts:
            click.echo("", err=True)  # ends the progress line
        return counts


class _Progress:
    """One stderr line, rewritten after each batch."""

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}

    def deleted(self, table: RetentionTable, rows: int) -> None:
        if not rows:
            return
        self.counts[table] = self.counts.get(table, 0) + rows
        shown = ", ".join(f"{table}: {count}" for table, count in self.counts.items())
        click.echo(f"\rdeleted {shown}", nl=False, err=True)


def _summary(record: Erasure) -> str:
    return (
        f"record {record.erasure_id}: {record.profiles} profile(s), {record.events} event id(s),"
        f" {record.form_answers} form answer(s) removed"
    )
