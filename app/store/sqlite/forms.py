"""SQL for amp-form submissions: ``SQLiteForms`` is the ``FormRepository`` of a SQLite store.

``save_submission`` records the answer once (``submission_id`` is the primary key, so a re-submit is
a no-op) and applies the form's profile updates in the same transaction: both are committed before
the server answers 2xx, or neither is. Profile updates apply on a re-submit too, since the user's
latest answer is the one that counts (A, then B, then A again leaves A in the profile); the version
bumps only when the attributes really change. Each path a form writes is stamped in ``field_times``
with ``(submitted at, submission_id)`` like a webhook event's fields, so an older event that arrives
later does not overwrite the answer (and a newer one does).
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import orjson

from app.campaigns.forms import AttrPath, ProfileConflict, check_paths
from app.ingest.events import Stamp, write_field
from app.store.base import Saved, Submission
from app.store.sqlite.events import SELECT_PROFILE, UPSERT_PROFILE

if TYPE_CHECKING:
    import sqlite3

    from app.store.sqlite.profiles import SQLiteProfileStore

logger = logging.getLogger(__name__)

_INSERT = """
INSERT INTO form_submissions (submission_id, campaign, block, recipient_id, payload, created_at)
VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (submission_id) DO NOTHING
"""
_UPDATE_TIMES = "UPDATE profiles SET field_times = ? WHERE recipient_id = ?"


class SQLiteForms:
    """The ``FormRepository`` of a SQLite store: one ``save_submission`` per write transaction."""

    def __init__(self, store: SQLiteProfileStore) -> None:
        self._store = store

    async def save(self, submission: Submission, now: float) -> Saved:
        return await self._store.run_write(lambda conn: save_submission(conn, submission, now))


def save_submission(conn: sqlite3.Connection, submission: Submission, now: float) -> Saved:
    s = submission
    cursor = conn.execute(_INSERT, (s.submission_id, s.campaign, s.block, s.recipient_id, s.payload, now))
    stamp = (_rfc3339(now), s.submission_id)
    changed = bool(s.profile_updates) and _update_profile(conn, s.recipient_id, s.profile_updates, stamp, now)
    return Saved(duplicate=cursor.rowcount == 0, profile_changed=changed)


def _update_profile(
    conn: sqlite3.Connection,
    recipient_id: str,
    updates: tuple[tuple[AttrPath, Any], ...],
    stamp: Stamp,
    now: float,
) -> bool:
    row = conn.execute(SELECT_PROFILE, (recipient_id,)).fetchone()
    try:
        attributes = {} if row is None else orjson.loads(row[0])
        if not isinstance(attributes, dict):
            raise ProfileConflict("stored attributes are not a JSON object")
        check_paths(attributes, updates)
        times = _field_times(row)
    except (orjson.JSONDecodeError, ProfileConflict) as exc:
        # The answer is still stored; overwriting a profile we cannot read would lose data.
        logger.warning("form profile update skipped for one recipient: %s", exc)
        return False
    before = orjson.dumps(attributes), orjson.dumps(times)
    for path, value in updates:
        write_field(attributes, times, ".".join(path), value, stamp)
    after = orjson.dumps(attributes), orjson.dumps(times)
    if after[0] != before[0]:
        conn.execute(UPSERT_PROFILE, (recipient_id, *after, now))
    elif after[1] != before[1]:  # the same answer again, newer: stamped, but the version stays
        conn.execute(_UPDATE_TIMES, (after[1], recipient_id))
    return after[0] != before[0]


def _field_times(row: Any) -> dict[str, Any]:
    times = None if row is None or row[1] is None else orjson.loads(row[1])
    return times if isinstance(times, dict) else {}


def _rfc3339(now: float) -> str:
    """The stamp's time, in the form ``app.ingest.events`` gives ``occurred_at`` (sortable as text)."""
    return datetime.fromtimestamp(now, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
