"""Batched profile lookups, shared by every backend: the waiters, the flush and the delivery.

``BatchedLookups`` is a base class, not a helper object, so a backend's ``fetch`` costs no extra hop:
the open-time path calls it once per request. Lookups made in the same loop tick, or while a read is
in flight, wait in ``_pending`` and go to the backend together as one read job; when it answers,
``_deliver`` hands each waiter its profile (or None) and starts the next job if more lookups came.
A backend supplies ``_start_read``, which runs the job off the loop (a thread, a task) and calls
``_deliver`` back on the loop. Pure: asyncio only, no I/O.

The queue is bounded: a lookup for a recipient not queued already, while ``max_pending`` recipients
are queued or being read, is answered at once with ``StoreBusy`` and queues nothing (counted in
``shed["full"]``). And when a job is sent, a queued recipient whose every waiter says (through its
``wanted``) that nobody waits any more is left out of it and answered ``StoreBusy`` (``shed
["abandoned"]``): lookups queue only while a read is in flight, so a queue whose waiters all gave up
means the store is slower than the budget, and reading for nobody would only delay the reads someone
waits for. A read already sent always finishes (its answer fills the caches for the next open).
"""

from __future__ import annotations

import asyncio
import logging
import sys
from collections import Counter
from collections.abc import Callable
from functools import partial

from app.store.base import Profile, ReadStats, StoreBusy, StoreError

# What a lookup's waiter is told: the profile, None (unknown recipient) or the StoreError.
LookupResult = Profile | None | StoreError
Waiters = dict[str, list[Callable[[LookupResult], None]]]
Wanted = Callable[[], bool]  # whether anyone still waits for a lookup's answer
SHED_REASONS = ("full", "abandoned")

logger = logging.getLogger(__name__)


class BatchedLookups:
    """``get`` / ``lookup`` / ``fetch`` of a ``ProfileRepository``, batched; see the module docstring."""

    def __init__(self) -> None:
        self.read_stats = ReadStats()
        self._loop: asyncio.AbstractEventLoop | None = None  # set by the backend while it is open
        self._pending: Waiters = {}
        self._flush_scheduled = False
        self._read_in_flight = False
        self._reading = 0  # recipients in the job in flight
        self._wanted: dict[str, list[Wanted]] = {}  # for queued recipients whose lookups said
        self.max_pending = sys.maxsize  # the server sets max_pending_store_reads
        self.shed: Counter[str] = Counter(dict.fromkeys(SHED_REASONS, 0))

    @property
    def depth(self) -> int:
        """Recipients queued or being read."""
        return len(self._pending) + self._reading

    def _start_read(self, loop: asyncio.AbstractEventLoop, batch: Waiters) -> None:
        """Read ``list(batch)`` off the loop, then call ``self._deliver(batch, outcome)`` on ``loop``."""
        raise NotImplementedError

    async def get(self, recipient_id: str) -> Profile | None:
        return await self.lookup(recipient_id)

    def lookup(self, recipient_id: str) -> asyncio.Future[Profile | None]:
        future: asyncio.Future[Profile | None] = asyncio.get_running_loop().create_future()
        self.fetch(recipient_id, partial(_resolve, future))
        return future

    def fetch(
        self, recipient_id: str, callback: Callable[[LookupResult], None], wanted: Wanted | None = None
    ) -> None:
        """Call ``callback`` on the event loop with the result of a batched lookup (no future, no task:
        the open-time path wakes its own waiters). ``wanted``: see the module docstring."""
        loop = self._loop
        if loop is None:
            asyncio.get_running_loop().call_soon(callback, StoreError("store is not open"))
            return
        waiting = self._pending.get(recipient_id)
        if waiting is None:
            if len(self._pending) + self._reading >= self.max_pending:
                self.shed["full"] += 1
                loop.call_soon(callback, StoreBusy("too many profile reads are queued"))
                return
            waiting = self._pending[recipient_id] = []
        waiting.append(callback)
        if wanted is not None:
            self._wanted.setdefault(recipient_id, []).append(wanted)
        if not (self._flush_scheduled or self._read_in_flight):
            self._flush_scheduled = True
            loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        loop = self._loop
        if self._read_in_flight or not self._pending or loop is None:
            return
        batch, self._pending = self._pending, {}
        wanted, self._wanted = self._wanted, {}
        if wanted:
            self._drop_abandoned(batch, wanted)
            if not batch:
                return
        self._read_in_flight = True
        self._reading = len(batch)
        self._count_read(len(batch))
        self._start_read(loop, batch)

    def _drop_abandoned(self, batch: Waiters, wanted: dict[str, list[Wanted]]) -> None:
        """Leave out of ``batch`` the recipients whose every lookup said nobody waits for it now."""
        for recipient_id, checks in wanted.items():
            callbacks = batch[recipient_id]
            if len(checks) < len(callbacks) or any(check() for check in checks):
                continue
            del batch[recipient_id]
            self.shed["abandoned"] += 1
            for callback in callbacks:
                _call(callback, StoreBusy("nobody waits for this profile read any more"))

    def _deliver(self, batch: Waiters, outcome: dict[str, Profile] | Exception) -> None:
        self._read_in_flight = False
        self._reading = 0
        if isinstance(outcome, dict):
            for recipient_id, callbacks in batch.items():
                profile = outcome.get(recipient_id)
                for callback in callbacks:
                    _call(callback, profile)
        else:
            fail_waiters(batch, outcome)
        if self._pending:
            self._flush()

    def _fail_pending(self, error: StoreError) -> None:
        """The store is closing: nobody waiting will get an answer any more."""
        pending, self._pending = self._pending, {}
        self._wanted = {}
        fail_waiters(pending, error)

    def _count_read(self, keys: int) -> None:
        self.read_stats.batches += 1
        self.read_stats.keys += keys


def fail_waiters(batch: Waiters, error: Exception) -> None:
    for callbacks in batch.values():
        for callback in callbacks:
            # One exception object per waiter: a shared one would grow its traceback on every raise.
            copy = StoreError(str(error))
            copy.__cause__ = error.__cause__ if isinstance(error, StoreError) else error
            _call(callback, copy)


def _call(callback: Callable[[LookupResult], None], result: LookupResult) -> None:
    """One waiter's failure must not keep the rest of the batch from their answers."""
    try:
        callback(result)
    except Exception:
        logger.exception("a profile lookup callback failed")


def _resolve(future: asyncio.Future[Profile | None], result: LookupResult) -> None:
    if future.done():  # a cancelled waiter is simply skipped
        return
    if isinstance(result, StoreError):
        future.set_exception(result)
    else:
        future.set_result(result)
