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
from dataclasses import dataclass
from typing import TYPE_CHECKING

import orjson

from app.ingest.events import Attributes, Event, FieldTimes, apply_event
from app.store.base import EventStatus

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


@dataclass(slots=True)
class _Working:
    """One recipient's profile while a transaction applies events to it."""

    attributes: Attributes
    field_times: FieldTimes
    original: tuple[bytes, bytes] | None  # stored (attributes, field_times); None: unreadable
    encoded: tuple[bytes, bytes] | None = None  # the current (attributes, field_times), once changed


def apply_events(conn: sqlite3.Connection, events: Sequence[Event], now: float) -> list[EventStatus]:
    """Record and apply ``events`` in order; one status per event. Call inside a transaction."""
    profiles: dict[str, _Working] = {}
    statuses: list[EventStatus] = []
    for event in events:
        work = profiles.get(event.recipient)
        if work is None:
            work = profiles[event.recipient] = _load(conn, event.recipient)
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


def _apply_one(conn: sqlite3.Connection, work: _Working, event: Event, now: float) -> EventStatus:
    row = (event.id, event.recipient, event.type, event.occurred_at, now)
    if conn.execute(_INSERT_EVENT, row).rowcount == 0:
        return "duplicate"
    attributes, field_times = apply_event(work.attributes, work.field_times, event)
    # Encoded here, not at the end: a value the store cannot hold fails this event alone.
    work.encoded = (orjson.dumps(attributes), orjson.dumps(field_times))
    work.attributes, work.field_times = attributes, field_times
    return "applied"


def _load(conn: sqlite3.Connection, recipient: str) -> _Working:
    row = conn.execute(SELECT_PROFILE, (recipient,)).fetchone()
    if row is None:
        return _Working({}, {}, (b"{}", b"{}"))
    try:
        attributes, times = orjson.loads(row[0]), orjson.loads(row[1])
    except orjson.JSONDecodeError:
        attributes = times = None
    if not isinstance(attributes, dict):
        # Overwriting a profile we cannot read would lose data.
        logger.warning("events skipped for a recipient whose stored attributes are not a JSON object")
        return _Working({}, {}, None)
    return _Working(attributes, times if isinstance(times, dict) else {}, (_raw(row[0]), _raw(row[1])))


def _raw(value: bytes | str) -> bytes:
    return value.encode() if isinstance(value, str) else bytes(value)  # the column default is text


def _save(conn: sqlite3.Connection, recipient: str, work: _Working, now: float) -> None:
    encoded = work.encoded
    if work.original is None or encoded is None:
        return
    if encoded == work.original:  # nothing applied (duplicates only) or no visible change
        return
    conn.execute(UPSERT_PROFILE, (recipient, *encoded, now))
