"""Batched profile lookups, shared by every backend: the waiters, the flush and the delivery.

``BatchedLookups`` is a base class, not a helper object, so a backend's ``fetch`` costs no extra hop:
the open-time path calls it once per request. Lookups made in the same loop tick, or while a read is
in flight, wait in ``_pending`` and go to the backend together as one read job; when it answers,
``_deliver`` hands each waiter its profile (or None) and starts the next job if more lookups came.
A backend supplies ``_start_read``, which runs the job off the loop (a thread, a task) and calls
``_deliver`` back on the loop. Pure: asyncio only, no I/O.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from functools import partial

from app.store.base import Profile, ReadStats, StoreError

# What a lookup's waiter is told: the profile, None (unknown recipient) or the StoreError.
LookupResult = Profile | None | StoreError
Waiters = dict[str, list[Callable[[LookupResult], None]]]

logger = logging.getLogger(__name__)


class BatchedLookups:
    """``get`` / ``lookup`` / ``fetch`` of a ``ProfileRepository``, batched; see the module docstring."""

    def __init__(self) -> None:
        self.read_stats = ReadStats()
        self._loop: asyncio.AbstractEventLoop | None = None  # set by the backend while it is open
        self._pending: Waiters = {}
        self._flush_scheduled = False
        self._read_in_flight = False

    def _start_read(self, loop: asyncio.AbstractEventLoop, batch: Waiters) -> None:
        """Read ``list(batch)`` off the loop, then call ``self._deliver(batch, outcome)`` on ``loop``."""
        raise NotImplementedError

    async def get(self, recipient_id: str) -> Profile | None:
        return await self.lookup(recipient_id)

    def lookup(self, recipient_id: str) -> asyncio.Future[Profile | None]:
        future: asyncio.Future[Profile | None] = asyncio.get_running_loop().create_future()
        self.fetch(recipient_id, partial(_resolve, future))
        return future

    def fetch(self, recipient_id: str, callback: Callable[[LookupResult], None]) -> None:
        """Call ``callback`` on the event loop with the result of a batched lookup (no future, no task:
        the open-time path wakes its own waiters)."""
        loop = self._loop
        if loop is None:
            asyncio.get_running_loop().call_soon(callback, StoreError("store is not open"))
            return
        self._pending.setdefault(recipient_id, []).append(callback)
        if not (self._flush_scheduled or self._read_in_flight):
            self._flush_scheduled = True
            loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        loop = self._loop
        if self._read_in_flight or not self._pending or loop is None:
            return
        batch, self._pending = self._pending, {}
        self._read_in_flight = True
        self._count_read(len(batch))
        self._start_read(loop, batch)

    def _deliver(self, batch: Waiters, outcome: dict[str, Profile] | Exception) -> None:
        self._read_in_flight = False
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
