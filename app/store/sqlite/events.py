"""Webhook events into SQLite: idempotent by id, applied and committed before they are acknowledged.

``apply_events`` runs inside the store's write transaction (``run_write``, synchronous=FULL): the
``events`` row of each id and the profile changes are committed together, or not at all. A replayed
id hits the primary key and is reported as a duplicate without touching the profile. Each event runs
under its own savepoint: one that cannot be applied is rolled back alone and reported ``failed``, so it
cannot fail the other events (or other requests) sharing the transaction.

``SQLiteEvents`` is the ``EventRepository``; the group commit in front of it is
``app.ingest.writer.EventWriter``.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Sequence
from typing import TYPE_CHECKING

from app.ingest.events import Event
from app.store.base import EventStatus
from app.store.profile_edits import Working, working

if TYPE_CHECKING:
    from app.store.sqlite.profiles import SQLiteProfileStore

logger = logging.getLogger(__name__)

_INSERT_EVENT = """
INSERT INTO events (id, recipient, type, occurred_at, received_at) VALUES (?, ?, ?, ?, ?)
ON CONFLICT (id) DO NOTHING
"""
SELECT_PROFILE = "SELECT attributes, field_times FROM profiles WHERE recipient_id = ?"
UPSERT_PROFILE = """
INSERT INTO profiles (recipient_id, attributes, field_times, version, updated_at) VALUES (?, ?, ?, 1, ?)
ON CONFLICT (recipient_id) DO UPDATE SET
    attributes = excluded.attributes, field_times = excluded.field_times,
    version = profiles.version + 1, updated_at = excluded.updated_at
"""


class SQLiteEvents:
    """The ``EventRepository`` of a SQLite store: one ``apply_events`` per write transaction."""

    def __init__(self, store: SQLiteProfileStore) -> None:
        self._store = store

    async def commit(self, events: Sequence[Event], now: float) -> list[EventStatus]:
        return await self._store.run_write(lambda conn: apply_events(conn, events, now))


def apply_events(conn: sqlite3.Connection, events: Sequence[Event], now: float) -> list[EventStatus]:
    """Record and apply ``events`` in order; one status per event. Call inside a transaction."""
    profiles: dict[str, Working] = {}
    statuses: list[EventStatus] = []
    for event in events:
        work = profiles.get(event.recipient)
        if work is None:
            work = profiles[event.recipient] = working(
                conn.execute(SELECT_PROFILE, (event.recipient,)).fetchone()
            )
        if work.original is None:
            statuses.append("unreadable-profile")  # not recorded: it can be sent again once fixed
            continue
        conn.execute("SAVEPOINT ev")
        try:
            statuses.append(_apply_one(conn, work, event, now))
        except sqlite3.Error:
            raise  # the store itself failed: the whole transaction goes
        except Exception:
            logger.exception("event %r could not be applied; rolled back alone", event.id)
            conn.execute("ROLLBACK TO ev")
            statuses.append("failed")
        conn.execute("RELEASE ev")
    for recipient, work in profiles.items():
        _save(conn, recipient, work, now)
    return statuses


def _apply_one(conn: sqlite3.Connection, work: Working, event: Event, now: float) -> EventStatus:
    row = (event.id, event.recipient, event.type, event.occurred_at, now)
    if conn.execute(_INSERT_EVENT, row).rowcount == 0:
        return "duplicate"
    work.apply(event)
    return "applied"


def _save(conn: sqlite3.Connection, recipient: str, work: Working, now: float) -> None:
    encoded = work.to_write()
    if encoded is not None:
        conn.execute(UPSERT_PROFILE, (recipient, *encoded, now))
