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

from typing import TYPE_CHECKING

from app.store.base import Saved, Submission
from app.store.profile_edits import form_edit
from app.store.sqlite.events import SELECT_PROFILE, UPSERT_PROFILE

if TYPE_CHECKING:
    import sqlite3

    from app.store.sqlite.profiles import SQLiteProfileStore

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
    edit = None
    if s.profile_updates:
        stored = conn.execute(SELECT_PROFILE, (s.recipient_id,)).fetchone()
        edit = form_edit(stored, s.profile_updates, s.submission_id, now)
    if edit is not None and edit.attributes is not None:
        conn.execute(UPSERT_PROFILE, (s.recipient_id, edit.attributes, edit.field_times, now))
    elif edit is not None:  # the same answer again, newer: stamped, but the version stays
        conn.execute(_UPDATE_TIMES, (edit.field_times, s.recipient_id))
    changed = edit is not None and edit.attributes is not None
    return Saved(duplicate=cursor.rowcount == 0, profile_changed=changed)
