"""SQL for amp-form submissions, run inside the store's write transaction (``run_write``).

``save_submission`` records the answer once (``submission_id`` is the primary key, so a re-submit is
a no-op) and applies the form's profile updates in the same transaction: both are committed before
the server answers 2xx, or neither is. Profile updates apply on a re-submit too, since the user's
latest answer is the one that counts (A, then B, then A again leaves A in the profile); the version
bumps only when the attributes really change.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, TypeVar, runtime_checkable

import orjson

from app.forms import AttrPath, ProfileConflict, set_paths

if TYPE_CHECKING:
    import sqlite3

T = TypeVar("T")
logger = logging.getLogger(__name__)

_INSERT = """
INSERT INTO form_submissions (submission_id, campaign, block, recipient_id, payload, created_at)
VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (submission_id) DO NOTHING
"""
_SELECT_PROFILE = "SELECT attributes FROM profiles WHERE recipient_id = ?"
_UPSERT_PROFILE = """
INSERT INTO profiles (recipient_id, attributes, version, updated_at) VALUES (?, ?, 1, ?)
ON CONFLICT (recipient_id) DO UPDATE SET
    attributes = excluded.attributes, version = profiles.version + 1, updated_at = excluded.updated_at
"""


@runtime_checkable
class TransactionalStore(Protocol):
    """What form submissions need from a store: ``SQLiteProfileStore`` provides it."""

    async def run_write(self, fn: Callable[[sqlite3.Connection], T]) -> T: ...


@dataclass(frozen=True, slots=True)
class Submission:
    submission_id: str
    campaign: str
    block: str
    recipient_id: str
    payload: bytes
    profile_updates: tuple[tuple[AttrPath, Any], ...] = ()


@dataclass(frozen=True, slots=True)
class Saved:
    duplicate: bool  # the same answer was already stored
    profile_changed: bool


def save_submission(conn: sqlite3.Connection, submission: Submission, now: float) -> Saved:
    s = submission
    cursor = conn.execute(_INSERT, (s.submission_id, s.campaign, s.block, s.recipient_id, s.payload, now))
    changed = bool(s.profile_updates) and _update_profile(conn, s.recipient_id, s.profile_updates, now)
    return Saved(duplicate=cursor.rowcount == 0, profile_changed=changed)


def _update_profile(
    conn: sqlite3.Connection, recipient_id: str, updates: tuple[tuple[AttrPath, Any], ...], now: float
) -> bool:
    row = conn.execute(_SELECT_PROFILE, (recipient_id,)).fetchone()
    try:
        attributes = {} if row is None else orjson.loads(row[0])
        if not isinstance(attributes, dict):
            raise ProfileConflict("stored attributes are not a JSON object")
        if not set_paths(attributes, updates):
            return False
    except (orjson.JSONDecodeError, ProfileConflict) as exc:
        # The answer is still stored; overwriting a profile we cannot read would lose data.
        logger.warning("form profile update skipped for one recipient: %s", exc)
        return False
    conn.execute(_UPSERT_PROFILE, (recipient_id, orjson.dumps(attributes), now))
    return True
