"""amp-form answers in PostgreSQL: ``PostgresForms`` is the ``FormRepository`` of a PostgreSQL store.

The answer is recorded once by ``submission_id`` and its profile updates applied in the same
transaction, under the recipient's lock, run again if an import created the profile meanwhile (see
``events.py``); what the updates do is decided by
``app.store.profile_edits.form_edit``, shared with SQLite.
"""

from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING

from app.store.base import Saved, Submission
from app.store.postgres.events import load_for_update, write_profiles
from app.store.profile_edits import form_edit

if TYPE_CHECKING:
    import asyncpg

    from app.store.postgres.store import PostgresStore

_INSERT = """
INSERT INTO form_submissions (submission_id, campaign, block, recipient_id, payload, created_at)
VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (submission_id) DO NOTHING
"""
_UPDATE_TIMES = "UPDATE profiles SET field_times = $1 WHERE recipient_id = $2"


class PostgresForms:
    def __init__(self, store: PostgresStore) -> None:
        self._store = store

    async def save(self, submission: Submission, now: float) -> Saved:
        return await self._store.run_transaction(partial(_save, submission, now))


async def _save(s: Submission, now: float, conn: asyncpg.Connection) -> Saved:
    status = await conn.execute(_INSERT, s.submission_id, s.campaign, s.block, s.recipient_id, s.payload, now)
    edit = None
    if s.profile_updates:
        loaded = await load_for_update(conn, [s.recipient_id])
        stored = loaded.profiles[s.recipient_id].original
        if stored is not None:  # None: unreadable, left alone (the answer is still stored)
            edit = form_edit(stored, s.profile_updates, s.submission_id, now)
        if edit is not None and edit.attributes is not None:
            changes = [(s.recipient_id, (edit.attributes, edit.field_times))]
            await write_profiles(conn, changes, loaded.found, now)
        elif edit is not None:  # the same answer again, newer: stamped, but the version stays
            await conn.execute(_UPDATE_TIMES, edit.field_times, s.recipient_id)
    changed = edit is not None and edit.attributes is not None
    return Saved(duplicate=status.endswith(" 0"), profile_changed=changed)
