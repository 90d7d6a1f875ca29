"""The group commit in front of the event repository, and the invalidation after it.

Requests that arrive while a transaction is being committed wait and go, all together, into the next
one: many small posts then cost one fsync per round instead of one each. Each request still learns
the outcome of its own events. After a commit, and before any request is answered, the recipients
whose events were applied are announced on the invalidation seam, so caches drop their old data.

When the store fails (down, hung past its deadline), waiting helps nobody: a failed commit fails
every request queued behind it too, at once (each answers 503 and its sender retries; nothing was
acknowledged), instead of each batch waiting out one more deadline. And the queue is bounded: past
``max_queued`` events waiting, a request is refused straight away (StoreError, 503) and counted.

What ``GET /metrics`` shows of it, counted here in plain numbers (a Counter update and, per applied
event, a timestamp parse: microseconds next to a commit's fsync): events by status once committed,
events a failed commit left unsaved, how many wait and for how long, and how late events arrive (from
their ``occurred_at`` to durable: the sender's pipeline latency, which no data age can show).
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from app.content.invalidation import Invalidation
from app.counting import AGE_BUCKETS, Histogram
from app.ingest.events import Event
from app.store.base import EventRepository, EventStatus, StoreError

logger = logging.getLogger(__name__)

MAX_EVENTS_PER_TRANSACTION = 5000
MAX_QUEUED_EVENTS = 10_000


@dataclass(slots=True)
class _Request:
    events: Sequence[Event]
    future: asyncio.Future[list[EventStatus]]
    since: float  # the writer's clock when it arrived


class EventWriter:
    """Merges concurrent ``write()`` calls into shared transactions (group commit).

    At most one transaction is in flight; calls made meanwhile queue up and are committed together
    in the next one (up to ``max_events``). ``invalidation`` hears of the recipients whose events were
    applied, after the commit and before any caller is answered.
    """

    def __init__(
        self,
        events: EventRepository,
        *,
        clock: Callable[[], float],
        invalidation: Invalidation,
        max_events: int = MAX_EVENTS_PER_TRANSACTION,
        max_queued: int = MAX_QUEUED_EVENTS,
    ) -> None:
        self._events = events
        self._clock = clock
        self._invalidation = invalidation
        self._max_events = max_events
        self._max_queued = max_queued
        self._queue: list[_Request] = []
        self._queued = 0  # events in ``_queue``
        self._task: asyncio.Task[None] | None = None
        self._committing: list[_Request] = []  # the batch in the transaction in flight
        self.transactions = 0
        self.rejected = 0  # requests refused because the queue was full
        self.committed: Counter[EventStatus] = Counter()  # events in committed transactions, by status
        self.failed = 0  # events a failed transaction left unsaved (their senders got a 503 and retry)
        self.delay = Histogram(AGE_BUCKETS)  # applied events: seconds from occurred_at to durable

    @property
    def queued(self) -> int:
        """Events accepted and not committed yet: waiting, or in the transaction in flight."""
        return self._queued + sum(len(request.events) for request in self._committing)

    def oldest_wait(self, now: float) -> float:
        """Seconds the oldest event not committed yet has waited (0 when none waits)."""
        oldest = self._committing[:1] or self._queue[:1]
        return max(0.0, now - oldest[0].since) if oldest else 0.0

    async def write(self, events: Sequence[Event]) -> list[EventStatus]:
        """Commit ``events``; returns one status per event. Raises ``StoreError``."""
        if self._queue and self._queued + len(events) > self._max_queued:
            self.rejected += 1
            raise StoreError(f"more than {self._max_queued} events wait for the store: try again later")
        future: asyncio.Future[list[EventStatus]] = asyncio.get_running_loop().create_future()
        self._queue.append(_Request(events, future, self._clock()))
        self._queued += len(events)
        if self._task is None:
            self._task = asyncio.create_task(self._drain())
        # shield: a caller that goes away must not cancel a commit other callers wait for.
        return await asyncio.shield(future)

    async def _drain(self) -> None:
        try:
            while self._queue:
                self._committing = self._take()
                await self._commit(self._committing)
        finally:
            self._committing = []
            self._task = None

    def _take(self) -> list[_Request]:
        taken, count = 0, 0
        for request in self._queue:
            if taken and count + len(request.events) > self._max_events:
                break
            taken, count = taken + 1, count + len(request.events)
        batch, self._queue = self._queue[:taken], self._queue[taken:]
        self._queued -= count
        return batch

    async def _commit(self, batch: list[_Request]) -> None:
        events = [event for request in batch for event in request.events]
        now = self._clock()
        try:
            statuses = await self._events.commit(events, now)
        except Exception as exc:
            error = exc if isinstance(exc, StoreError) else StoreError(f"events not saved: {exc!r}")
            if error is not exc:
                logger.exception("applying events failed")
            else:  # the store failed: the next commit would too, one deadline later; fail them all now
                batch += self._take_all()
            self.failed += sum(len(request.events) for request in batch)
            for request in batch:
                _settle(request.future, StoreError(str(error)))  # one per waiter: tracebacks grow
            return
        self.transactions += 1
        self._count(events, statuses, self._clock())  # durable now, however long the commit took
        await self._notify(events, statuses)
        offset = 0
        for request in batch:
            _settle(request.future, statuses[offset : offset + len(request.events)])
            offset += len(request.events)

    def _count(self, events: list[Event], statuses: list[EventStatus], now: float) -> None:
        self.committed.update(statuses)
        for event, status in zip(events, statuses, strict=True):
            if status == "applied":
                # An event stamped ahead of the clock (allowed up to an hour) counts as on time.
                self.delay.observe(max(0.0, now - datetime.fromisoformat(event.occurred_at).timestamp()))

    def _take_all(self) -> list[_Request]:
        queued, self._queue, self._queued = self._queue, [], 0
        return queued

    async def _notify(self, events: list[Event], statuses: list[EventStatus]) -> None:
        changed = {e.recipient for e, s in zip(events, statuses, strict=True) if s == "applied"}
        if not changed:
            return
        try:
            await self._invalidation.recipients_changed(changed)
        except Exception:
            # Committed all the same: failing the answer would only make the sender retry a duplicate.
            logger.exception("cache invalidation after events failed")


def _settle(future: asyncio.Future[list[EventStatus]], outcome: list[EventStatus] | Exception) -> None:
    if future.done():
        return
    if isinstance(outcome, Exception):
        future.set_exception(outcome)
    else:
        future.set_result(outcome)


def statuses_json(
    events: Sequence[tuple[int, Event]], statuses: Sequence[EventStatus]
) -> list[dict[str, Any]]:
    return [
        {"index": index, "id": event.id, "status": status}
        for (index, event), status in zip(events, statuses, strict=True)
    ]
