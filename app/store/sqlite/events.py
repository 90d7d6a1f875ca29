"""Webhook events into SQLite: idempotent by id, applied and committed before they are acknowledged.

``apply_events`` runs inside the store's write transaction (``run_write``, synchronous=FULL): the
``events`` row of each id and the profile changes are committed together, or not at all. A replayed
id hits the primary key and is reported as a duplicate without touching the profile. Each event runs
under its own savepoint: one that cannot be applied is rolled back alone and reported ``failed``, so it
cannot fail the other events (or other requests) sharing the transaction.

``EventWriter`` is the group commit in front of it: requests that arrive while a transaction is being
committed wait and go, all together, into the next one. Many small posts then cost one fsync per
round instead of one each. Each request still learns the outcome of its own events.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import orjson

from app.ingest.events import Attributes, Event, FieldTimes, apply_event
from app.store.base import StoreError

if TYPE_CHECKING:
    from app.store.sqlite.forms import TransactionalStore

logger = logging.getLogger(__name__)
Status = Literal["applied", "duplicate", "unreadable-profile", "failed"]

MAX_EVENTS_PER_TRANSACTION = 5000
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


@dataclass(slots=True)
class _Working:
    """One recipient's profile while a transaction applies events to it."""

    attributes: Attributes
    field_times: FieldTimes
    original: tuple[bytes, bytes] | None  # stored (attributes, field_times); None: unreadable
    encoded: tuple[bytes, bytes] | None = None  # the current (attributes, field_times), once changed


def apply_events(conn: sqlite3.Connection, events: Sequence[Event], now: float) -> list[Status]:
    """Record and apply ``events`` in order; one status per event. Call inside a transaction."""
    profiles: dict[str, _Working] = {}
    statuses: list[Status] = []
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


def _apply_one(conn: sqlite3.Connection, work: _Working, event: Event, now: float) -> Status:
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


# -- group commit ------------------------------------------------------------------------------------


@dataclass(slots=True)
class _Request:
    events: Sequence[Event]
    future: asyncio.Future[list[Status]]


class EventWriter:
    """Merges concurrent ``write()`` calls into shared transactions (group commit).

    At most one transaction is in flight; calls made meanwhile queue up and are committed together
    in the next one (up to ``max_events``). ``on_commit`` receives the recipients whose events were
    applied, after the commit and before any caller is answered (cache invalidation).
    """

    def __init__(
        self,
        store: TransactionalStore,
        *,
        clock: Callable[[], float],
        on_commit: Callable[[Iterable[str]], None] = lambda recipients: None,
        max_events: int = MAX_EVENTS_PER_TRANSACTION,
    ) -> None:
        self._store = store
        self._clock = clock
        self._on_commit = on_commit
        self._max_events = max_events
        self._queue: list[_Request] = []
        self._task: asyncio.Task[None] | None = None
        self.transactions = 0

    async def write(self, events: Sequence[Event]) -> list[Status]:
        """Commit ``events``; returns one status per event. Raises ``StoreError``."""
        future: asyncio.Future[list[Status]] = asyncio.get_running_loop().create_future()
        self._queue.append(_Request(events, future))
        if self._task is None:
            self._task = asyncio.create_task(self._drain())
        # shield: a caller that goes away must not cancel a commit other callers wait for.
        return await asyncio.shield(future)

    async def _drain(self) -> None:
        try:
            while self._queue:
                await self._commit(self._take())
        finally:
            self._task = None

    def _take(self) -> list[_Request]:
        taken, count = 0, 0
        for request in self._queue:
            if taken and count + len(request.events) > self._max_events:
                break
            taken, count = taken + 1, count + len(request.events)
        batch, self._queue = self._queue[:taken], self._queue[taken:]
        return batch

    async def _commit(self, batch: list[_Request]) -> None:
        events = [event for request in batch for event in request.events]
        now = self._clock()
        try:
            statuses = await self._store.run_write(lambda conn: apply_events(conn, events, now))
        except Exception as exc:
            error = exc if isinstance(exc, StoreError) else StoreError(f"events not saved: {exc!r}")
            if error is not exc:
                logger.exception("applying events failed")
            for request in batch:
                _settle(request.future, StoreError(str(error)))  # one per waiter: tracebacks grow
            return
        self.transactions += 1
        self._notify(events, statuses)
        offset = 0
        for request in batch:
            _settle(request.future, statuses[offset : offset + len(request.events)])
            offset += len(request.events)

    def _notify(self, events: list[Event], statuses: list[Status]) -> None:
        changed = {e.recipient for e, s in zip(events, statuses, strict=True) if s == "applied"}
        if not changed:
            return
        try:
            self._on_commit(changed)
        except Exception:
            logger.exception("cache invalidation after events failed")


def _settle(future: asyncio.Future[list[Status]], outcome: list[Status] | Exception) -> None:
    if future.done():
        return
    if isinstance(outcome, Exception):
        future.set_exception(outcome)
    else:
        future.set_result(outcome)


def statuses_json(events: Sequence[tuple[int, Event]], statuses: Sequence[Status]) -> list[dict[str, Any]]:
    return [
        {"index": index, "id": event.id, "status": status}
        for (index, event), status in zip(events, statuses, strict=True)
    ]
