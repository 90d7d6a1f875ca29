"""SQL for erasure, access requests and retention: ``SQLitePrivacy`` is the ``PrivacyRepository``.

An erasure deletes the profile row (its field times go with it), the recipient's event ids and
form answers, and inserts the erasure record, in one write transaction: committed together or not at
all. Retention deletes in short batches (``expire``), each its own transaction on the writer thread,
so webhook commits queued behind it wait for one batch at most.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from app.store.base import (
    Erasure,
    RecipientData,
    RetentionTable,
    StoredAnswer,
    StoredEvent,
    StoredProfile,
)

if TYPE_CHECKING:
    import sqlite3

    from app.store.sqlite.profiles import SQLiteProfileStore

_DELETES = (
    "DELETE FROM profiles WHERE recipient_id = ?",
    "DELETE FROM events WHERE recipient = ?",
    "DELETE FROM form_submissions WHERE recipient_id = ?",
)
_RECORD = """
INSERT INTO erasures (erasure_id, id_hash, erased_at, requested_by, profiles, events, form_answers)
VALUES (?, ?, ?, ?, ?, ?, ?)
"""
_ERASURES = """
SELECT erasure_id, id_hash, erased_at, requested_by, profiles, events, form_answers FROM erasures
WHERE id_hash = ? ORDER BY erased_at, erasure_id
"""
_PROFILE = "SELECT attributes, field_times, version, updated_at FROM profiles WHERE recipient_id = ?"
_EVENTS = "SELECT id, type, occurred_at, received_at FROM events WHERE recipient = ? ORDER BY received_at, id"
_ANSWERS = """
SELECT submission_id, campaign, block, payload, created_at FROM form_submissions WHERE recipient_id = ?
ORDER BY created_at, submission_id
"""
_KEY_NAME = "erasure-records"
_ADD_KEY = "INSERT INTO store_secrets (name, secret) VALUES (?, ?) ON CONFLICT (name) DO NOTHING"
_GET_KEY = "SELECT secret FROM store_secrets WHERE name = ?"
_CLAIMED = "SELECT claimed_at FROM maintenance WHERE task = ?"
_CLAIM = """
INSERT INTO maintenance (task, claimed_at) VALUES (?, ?)
ON CONFLICT (task) DO UPDATE SET claimed_at = excluded.claimed_at
"""
# The key column of each table, and the time column retention compares (both indexed).
_EXPIRE = {
    "events": "DELETE FROM events WHERE id IN (SELECT id FROM events WHERE received_at < ? LIMIT ?)",
    "form_submissions": (
        "DELETE FROM form_submissions WHERE submission_id IN"
        " (SELECT submission_id FROM form_submissions WHERE created_at < ? LIMIT ?)"
    ),
    # An hour's counters go once the whole hour is past the limit.
    "exposures": (
        "DELETE FROM exposures WHERE bucket IN (SELECT bucket FROM exposures WHERE hour <= ? - 3600 LIMIT ?)"
    ),
}


class SQLitePrivacy:
    def __init__(self, store: SQLiteProfileStore) -> None:
        self._store = store

    async def erase(self, recipient_id: str, record: Erasure) -> Erasure:
        return await self._store.run_write(lambda conn: _erase(conn, recipient_id, record))

    async def erasures(self, id_hash: bytes) -> list[Erasure]:
        rows = await self._store.run_read(lambda conn: conn.execute(_ERASURES, (id_hash,)).fetchall())
        return [Erasure(e, bytes(h), at, by, p, ev, f) for e, h, at, by, p, ev, f in rows]

    async def export(self, recipient_id: str) -> RecipientData:
        # The reader connection sees one snapshot per statement; a read transaction makes it one.
        return await self._store.run_read(lambda conn: _export(conn, recipient_id))

    async def record_key(self, candidate: bytes) -> bytes:
        return await self._store.run_write(lambda conn: _record_key(conn, candidate))

    async def claim(self, task: str, now: float, period_s: float) -> bool:
        return await self._store.run_write(lambda conn: _claim(conn, task, now, period_s))

    async def expire(self, table: RetentionTable, before: float, limit: int) -> int:
        statement = _EXPIRE[table]
        return await self._store.run_write(lambda conn: conn.execute(statement, (before, limit)).rowcount)


def _erase(conn: sqlite3.Connection, recipient_id: str, record: Erasure) -> Erasure:
    profiles, events, answers = (conn.execute(sql, (recipient_id,)).rowcount for sql in _DELETES)
    stored = record._replace(profiles=profiles, events=events, form_answers=answers)
    conn.execute(_RECORD, stored)
    return stored


def _export(conn: sqlite3.Connection, recipient_id: str) -> RecipientData:
    conn.execute("BEGIN")
    try:
        row = conn.execute(_PROFILE, (recipient_id,)).fetchone()
        events = [StoredEvent(*r) for r in conn.execute(_EVENTS, (recipient_id,))]
        answers = [
            StoredAnswer(s, c, b, bytes(p), t) for s, c, b, p, t in conn.execute(_ANSWERS, (recipient_id,))
        ]
    finally:
        conn.execute("COMMIT")
    profile = None if row is None else StoredProfile(_bytes(row[0]), _bytes(row[1]), row[2], row[3])
    return RecipientData(profile, events, answers)


def _bytes(value: bytes | str) -> bytes:
    # A column default ('{}') comes back as text.
    return value.encode() if isinstance(value, str) else bytes(value)


def _record_key(conn: sqlite3.Connection, candidate: bytes) -> bytes:
    conn.execute(_ADD_KEY, (_KEY_NAME, candidate))
    return bytes(conn.execute(_GET_KEY, (_KEY_NAME,)).fetchone()[0])


def _claim(conn: sqlite3.Connection, task: str, now: float, period_s: float) -> bool:
    # BEGIN IMMEDIATE (run_write) holds the write lock: check and set are one step for every process.
    row = conn.execute(_CLAIMED, (task,)).fetchone()
    if row is not None and now - row[0] < period_s:
        return False
    conn.execute(_CLAIM, (task, now))
    return True
