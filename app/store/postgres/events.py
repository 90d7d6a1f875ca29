"""Webhook events into PostgreSQL: idempotent by id, applied and committed before they are acknowledged.

One transaction per ``commit``: it takes an advisory lock per recipient (so two processes applying
events or form answers to the same profile take turns), reads the profiles (locking the rows) and the
ids already recorded, lets ``app.store.profile_edits`` apply each event in Python, then records the
applied ids and writes the changed profiles in two statements. An event that cannot be applied is
simply not recorded, so it fails alone, as SQLite's per-event savepoint makes it do there.

Imports (``upsert_many``) take no advisory locks: a 5,000-row batch would take 5,000 of them, and the
server's lock table is shared by every connection (``max_locks_per_transaction`` x connections, 6,400
by default). So a profile read here as missing may be created by an import before this transaction
writes it. Instead of overwriting it (losing the imported attributes), the write only inserts the
profiles that were missing and only updates those that were read (and locked); when one of them was
created meanwhile, or another process recorded one of the event ids meanwhile, ``ConcurrentChange``
rolls the transaction back and ``PostgresStore.run_transaction`` runs it again: it then reads the new
profile (or sees the id, a duplicate) and applies the events on top.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING

from app.ingest.events import Event
from app.store.base import EventStatus, StoreError
from app.store.profile_edits import Working, working

if TYPE_CHECKING:
    import asyncpg

    from app.store.postgres.store import PostgresStore

logger = logging.getLogger(__name__)

# Locks taken in key order, so two transactions never wait for each other in a cycle; rows too.
_LOCK = """
SELECT pg_advisory_xact_lock(k) FROM (
    SELECT DISTINCT hashtextextended(r, 0) AS k FROM unnest($1::text[]) AS r ORDER BY k
) AS keys
"""
SELECT_PROFILES = (
    "SELECT recipient_id, attributes, field_times FROM profiles"
    " WHERE recipient_id = ANY($1::text[]) ORDER BY recipient_id FOR UPDATE"
)
_SEEN = "SELECT id FROM events WHERE id = ANY($1::text[])"
_RECORD = """
INSERT INTO events (id, recipient, type, occurred_at, received_at)
SELECT *, $5 FROM unnest($1::text[], $2::text[], $3::text[], $4::text[])
ON CONFLICT (id) DO NOTHING
"""
WRITE_PROFILES = """
INSERT INTO profiles (recipient_id, attributes, field_times, version, updated_at)
SELECT *, 1, $4 FROM unnest($1::text[], $2::bytea[], $3::bytea[])
ON CONFLICT (recipient_id) DO UPDATE SET
    attributes = excluded.attributes, field_times = excluded.field_times,
    version = profiles.version + 1, updated_at = excluded.updated_at
WHERE profiles.recipient_id = ANY($5::text[])
"""  # $5: the recipients read (and locked); any other conflict is a profile created meanwhile


class ConcurrentChange(StoreError):
    """Another process created a profile or recorded an event id this transaction read as missing:
    rolled back and run again (``PostgresStore.run_transaction``); a StoreError if it keeps happening."""


@dataclass(slots=True)
class Loaded:
    """Profiles locked and read by ``load_for_update``: all asked for, and the ids that exist."""

    profiles: dict[str, Working]
    found: set[str]


class PostgresEvents:
    """The ``EventRepository`` of a PostgreSQL store."""

    def __init__(self, store: PostgresStore) -> None:
        self._store = store

    async def commit(self, events: Sequence[Event], now: float) -> list[EventStatus]:
        if not events:
            return []
        return await self._store.run_transaction(partial(_commit, events, now))


async def _commit(events: Sequence[Event], now: float, conn: asyncpg.Connection) -> list[EventStatus]:
    loaded = await load_for_update(conn, {event.recipient for event in events})
    seen = {row[0] for row in await conn.fetch(_SEEN, [event.id for event in events])}
    statuses, applied = _apply(events, loaded.profiles, seen)
    if applied:
        columns = [
            list(c) for c in zip(*((e.id, e.recipient, e.type, e.occurred_at) for e in applied), strict=True)
        ]
        status = await conn.execute(_RECORD, *columns, now)
        if int(status.rsplit(" ", 1)[1]) != len(applied):
            # Another process recorded one of these ids meanwhile (this insert waited for its commit):
            # run again, and it reads as a duplicate while the others apply.
            raise ConcurrentChange("an event id was recorded concurrently")
    await write_profiles(conn, ((r, w.to_write()) for r, w in loaded.profiles.items()), loaded.found, now)
    return statuses


async def load_for_update(conn: asyncpg.Connection, recipients: Iterable[str]) -> Loaded:
    """Lock ``recipients`` for this transaction and read their profiles (missing ones start empty)."""
    ids = sorted(recipients)
    await lock_recipients(conn, ids)
    rows = {row[0]: (row[1], row[2]) for row in await conn.fetch(SELECT_PROFILES, ids)}
    return Loaded({recipient: working(rows.get(recipient)) for recipient in ids}, set(rows))


async def lock_recipients(conn: asyncpg.Connection, recipients: list[str]) -> None:
    """Take the per-recipient advisory locks every writer of a profile takes, until the transaction ends."""
    await conn.execute(_LOCK, recipients)


async def write_profiles(
    conn: asyncpg.Connection,
    changes: Iterable[tuple[str, tuple[bytes, bytes] | None]],
    found: set[str],
    now: float,
) -> None:
    """Store the new (attributes, field_times) of each recipient that has some; one statement.

    ``found``: the recipients ``load_for_update`` read. Raises ``ConcurrentChange`` when a profile it
    found missing exists now (created by another process): that profile is not overwritten."""
    changed = [(recipient, *encoded) for recipient, encoded in changes if encoded is not None]
    if changed:
        recipients, attributes, times = (list(column) for column in zip(*changed, strict=True))
        existing = [recipient for recipient in recipients if recipient in found]
        status = await conn.execute(WRITE_PROFILES, recipients, attributes, times, now, existing)
        if int(status.rsplit(" ", 1)[1]) != len(changed):
            raise ConcurrentChange("a profile was created concurrently")


def _apply(
    events: Sequence[Event], profiles: dict[str, Working], seen: set[str]
) -> tuple[list[EventStatus], list[Event]]:
    """Each event's status, in order, and the events to record; ``profiles`` are changed in place."""
    statuses: list[EventStatus] = []
    applied: list[Event] = []
    for event in events:
        work = profiles[event.recipient]
        if work.original is None:
            statuses.append("unreadable-profile")  # not recorded: it can be sent again once fixed
        elif event.id in seen:
            statuses.append("duplicate")
        else:
            try:
                work.apply(event)
            except Exception:
                logger.exception("event %r could not be applied; left out alone", event.id)
                statuses.append("failed")
                continue
            seen.add(event.id)
            applied.append(event)
            statuses.append("applied")
    return statuses, applied
