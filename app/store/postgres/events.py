"""Webhook events into PostgreSQL: idempotent by id, applied and committed before they are acknowledged.

One transaction per ``commit``: it takes an advisory lock per recipient (so two processes applying
events, form answers or imports to the same profile take turns, and a profile that does not exist yet
is not created twice), reads the profiles and the ids already recorded, lets
``app.store.profile_edits`` apply each event in Python, then records the applied ids and writes the
changed profiles in two statements. An event that cannot be applied is simply not recorded, so it
fails alone, as SQLite's per-event savepoint makes it do there.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

from app.ingest.events import Event
from app.store.base import EventStatus, StoreError
from app.store.profile_edits import Working, working

if TYPE_CHECKING:
    import asyncpg

    from app.store.postgres.store import PostgresStore

logger = logging.getLogger(__name__)

# Locks taken in key order, so two transactions never wait for each other in a cycle.
_LOCK = """
SELECT pg_advisory_xact_lock(k) FROM (
    SELECT DISTINCT hashtextextended(r, 0) AS k FROM unnest($1::text[]) AS r ORDER BY k
) AS keys
"""
SELECT_PROFILES = (
    "SELECT recipient_id, attributes, field_times FROM profiles"
    " WHERE recipient_id = ANY($1::text[]) FOR UPDATE"
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
"""


class PostgresEvents:
    """The ``EventRepository`` of a PostgreSQL store."""

    def __init__(self, store: PostgresStore) -> None:
        self._store = store

    async def commit(self, events: Sequence[Event], now: float) -> list[EventStatus]:
        if not events:
            return []
        async with self._store.transaction() as conn:
            profiles = await load_for_update(conn, {event.recipient for event in events})
            seen = {row[0] for row in await conn.fetch(_SEEN, [event.id for event in events])}
            statuses, applied = _apply(events, profiles, seen)
            if applied:
                columns = [
                    list(c)
                    for c in zip(*((e.id, e.recipient, e.type, e.occurred_at) for e in applied), strict=True)
                ]
                status = await conn.execute(_RECORD, *columns, now)
                if int(status.rsplit(" ", 1)[1]) != len(applied):
                    # Another process recorded one of these ids for another recipient meanwhile.
                    raise StoreError("an event id was recorded concurrently: nothing saved, retry")
            await write_profiles(conn, ((r, w.to_write()) for r, w in profiles.items()), now)
        return statuses


async def load_for_update(conn: asyncpg.Connection, recipients: Iterable[str]) -> dict[str, Working]:
    """Lock ``recipients`` for this transaction and read their profiles (missing ones start empty)."""
    ids = sorted(recipients)
    await conn.execute(_LOCK, ids)
    rows = {row[0]: (row[1], row[2]) for row in await conn.fetch(SELECT_PROFILES, ids)}
    return {recipient: working(rows.get(recipient)) for recipient in ids}


async def write_profiles(
    conn: asyncpg.Connection, changes: Iterable[tuple[str, tuple[bytes, bytes] | None]], now: float
) -> None:
    """Store the new (attributes, field_times) of each recipient that has some; one statement."""
    changed = [(recipient, *encoded) for recipient, encoded in changes if encoded is not None]
    if changed:
        recipients, attributes, times = (list(column) for column in zip(*changed, strict=True))
        await conn.execute(WRITE_PROFILES, recipients, attributes, times, now)


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
