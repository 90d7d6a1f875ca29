"""The one budget primitive: a waiter that is not answered by its deadline is answered "budget-exceeded".

Every open-time wait goes through ``Deadlines``: amp-list bodies, profile lookups for images and the
web view, and image renders. The work a waiter waits for is never cancelled by the deadline: it
finishes in the background and fills the cache, so the next open is served fresh.

One timer serves every waiter (a heap of deadlines, the timer armed for the earliest): a timer, a Task
or ``asyncio.wait`` per request would cost more than the SQLite read they guard.
"""

from __future__ import annotations

import asyncio
import heapq
from itertools import count
from typing import Any

from app.open_time.reasons import Reason

BUDGET_EXCEEDED = Reason.BUDGET_EXCEEDED


def settle(future: asyncio.Future[Any], value: object) -> None:
    """Answer ``future`` unless something (the work or its deadline) already did."""
    if not future.done():
        future.set_result(value)


class Deadlines:
    """Settles each added waiter with ``BUDGET_EXCEEDED`` once its budget runs out, with one timer."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, asyncio.Future[Any]]] = []
        self._order = count()  # ties never compare futures
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0

    def add(self, loop: asyncio.AbstractEventLoop, waiter: asyncio.Future[Any], budget_s: float) -> None:
        deadline = loop.time() + budget_s
        heapq.heappush(self._heap, (deadline, next(self._order), waiter))
        if self._timer is None or deadline < self._timer_at:
            self._arm(loop, deadline)

    def clear(self) -> None:
        self._heap.clear()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _arm(self, loop: asyncio.AbstractEventLoop, when: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer, self._timer_at = loop.call_at(when, self._expire, loop), when

    def _expire(self, loop: asyncio.AbstractEventLoop) -> None:
        self._timer = None
        heap, now = self._heap, loop.time()
        while heap and (heap[0][0] <= now or heap[0][2].done()):
            settle(heapq.heappop(heap)[2], BUDGET_EXCEEDED)
        if heap:
            self._arm(loop, heap[0][0])
