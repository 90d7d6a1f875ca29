"""Erasure, access requests and retention in PostgreSQL: ``PostgresPrivacy`` is the ``PrivacyRepository``.

An erasure takes the recipient's advisory lock, as events and form answers do, so it is ordered with
them: a commit already running for that recipient finishes first and is erased with the rest, one
that comes after it is new data. Retention claims its period under a transaction-level advisory lock
(``claim``), so among nodes sharing the database exactly one runs it per period, and deletes in short
batches, each its own transaction.
"""

from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING

from app.store.base import (
    Erasure,
    RecipientData,
    RetentionTable,
    StoredAnswer,
    StoredEvent,
    StoredProfile,
)
from app.store.postgres.events import lock_recipients

if TYPE_CHECKING:
    import asyncpg

    from app.store.postgres.store import PostgresStore

# Any constant other applications on the database are unlikely to pick ("otmaint" in hex).
MAINTENANCE_LOCK = 0x6F746D61696E74
_DELETES = (
    "DELETE FROM profiles WHERE recipient_id = $1",
    "DELETE FROM events WHERE recipient = $1",
    "DELETE FROM form_submissions WHERE recipient_id = $1",
)
_RECORD = """
INSERT INTO erasures (erasure_id, id_hash, erased_at, requested_by, profiles, events, form_answers)
VALUES ($1, $2, $3, $4, $5, $6, $7)
"""
_ERASURES = """
SELECT erasure_id, id_hash, erased_at, requested_by, profiles, events, form_answers FROM erasures
WHERE id_hash = $1 ORDER BY erased_at, erasure_id COLLATE "C"
"""
_PROFILE = "SELECT attributes, field_times, version, updated_at FROM profiles WHERE recipient_id = $1"
_EVENTS = """
SELECT id, type, occurred_at, received_at FROM events WHERE recipient = $1
ORDER BY received_at, id COLLATE "C"
"""
_ANSWERS = """
SELECT submission_id, campaign, block, payload, created_at FROM form_submissions WHERE recipient_id = $1
ORDER BY created_at, submission_id COLLATE "C"
"""
_KEY_NAME = "erasure-records"
_ADD_KEY = "INSERT INTO store_secrets (name, secret) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING"
_GET_KEY = "SELECT secret FROM store_secrets WHERE name = $1"
_TRY_LOCK = "SELECT pg_try_advisory_xact_lock($1)"
_CLAIMED = "SELECT claimed_at FROM maintenance WHERE task = $1"
_CLAIM = """
INSERT INTO maintenance (task, claimed_at) VALUES ($1, $2)
ON CONFLICT (task) DO UPDATE SET claimed_at = excluded.claimed_at
"""
_EXPIRE = {
    "events": "DELETE FROM events WHERE id IN (SELECT id FROM events WHERE received_at < $1 LIMIT $2)",
    "form_submissions": (
        "DELETE FROM form_submissions WHERE submission_id IN"
        " (SELECT submission_id FROM form_submissions WHERE created_at < $1 LIMIT $2)"
    ),
    # An hour's counters go once the whole hour is past the limit.
    "exposures": (
        "DELETE FROM exposures WHERE bucket IN"
        " (SELECT bucket FROM exposures WHERE hour <= $1 - 3600 LIMIT $2)"
    ),
}


class PostgresPrivacy:
    def __init__(self, store: PostgresStore) -> None:
        self._store = store

    async def erase(self, recipient_id: str, record: Erasure) -> Erasure:
        return await self._store.run_transaction(partial(_erase, recipient_id, record))

    async def erasures(self, id_hash: bytes) -> list[Erasure]:
        async with self._store.connection() as conn:
            rows = await conn.fetch(_ERASURES, id_hash)
        return [Erasure(e, bytes(h), at, by, p, ev, f) for e, h, at, by, p, ev, f in rows]

    async def export(self, recipient_id: str) -> RecipientData:
        async with self._store.connection() as conn, conn.transaction(isolation="repeatable_read"):
            row = await conn.fetchrow(_PROFILE, recipient_id)
            events = [StoredEvent(*r) for r in await conn.fetch(_EVENTS, recipient_id)]
            answers = [StoredAnswer(*r) for r in await conn.fetch(_ANSWERS, recipient_id)]
        profile = None if row is None else StoredProfile(*row)
        return RecipientData(profile, events, answers)

    async def record_key(self, candidate: bytes) -> bytes:
        async with self._store.transaction() as conn:
            await conn.execute(_ADD_KEY, _KEY_NAME, candidate)
            key: bytes = await conn.fetchval(_GET_KEY, _KEY_NAME)
        return key

    async def claim(self, task: str, now: float, period_s: float) -> bool:
        async with self._store.transaction() as conn:
            # Another node claiming right now: it will run it (and block nobody while it decides).
            if not await conn.fetchval(_TRY_LOCK, MAINTENANCE_LOCK):
                return False
            claimed = await conn.fetchval(_CLAIMED, task)
            if claimed is not None and now - claimed < period_s:
                return False
            await conn.execute(_CLAIM, task, now)
        return True

    async def expire(self, table: RetentionTable, before: float, limit: int) -> int:
        async with self._store.connection() as conn:
            status: str = await conn.execute(_EXPIRE[table], before, limit)
        return int(status.rsplit(" ", 1)[1])  # "DELETE <rows>"


async def _erase(recipient_id: str, record: Erasure, conn: asyncpg.Connection) -> Erasure:
    await lock_recipients(conn, [recipient_id])
    counts = [int((await conn.execute(sql, recipient_id)).rsplit(" ", 1)[1]) for sql in _DELETES]
    stored = record._replace(profiles=counts[0], events=counts[1], form_answers=counts[2])
    await conn.execute(_RECORD, *stored)
    return stored
