"""The one budget primitive: a waiter that is not answered by its deadline is answered "budget-exceeded".

Every open-time wait goes through ``Deadlines``: amp-list bodies, profile lookups for images and the
web view, and image renders. The work a waiter waits for is never cancelled by the deadline: once
started it finishes in the background and fills the cache, so the next open is served fresh (a store
read still queued when every waiter has been answered is dropped: ``app.store.batching``).

One timer serves every waiter, and waiters with the same budget expire in the order they were added,
so one FIFO per budget value with the timer armed for the earliest head replaces a timer per request
(a timer, a Task or ``asyncio.wait`` per request would cost more than the SQLite read they guard; a
heap of all deadlines measured ~1 µs more per cold open than the FIFOs). Budgets are therefore
rounded to the millisecond, which bounds the number of FIFOs.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any

from app.open_time.reasons import Reason

BUDGET_EXCEEDED = Reason.BUDGET_EXCEEDED
Waiting = deque[tuple[float, asyncio.Future[Any]]]


def settle(future: asyncio.Future[Any], value: object) -> None:
    """Answer ``future`` unless something (the work or its deadline) already did."""
    if not future.done():
        future.set_result(value)


class Deadlines:
    """Settles each added waiter with ``BUDGET_EXCEEDED`` once its budget runs out, with one timer."""

    def __init__(self) -> None:
        self._queues: dict[float, Waiting] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0

    def add(self, loop: asyncio.AbstractEventLoop, waiter: asyncio.Future[Any], budget_s: float) -> None:
        """``budget_s``: a block's budget (few distinct values), or a remainder rounded to the ms."""
        deadline = loop.time() + budget_s
        queue = self._queues.get(budget_s)
        if queue is None:
            queue = self._queues[budget_s] = deque()
        queue.append((deadline, waiter))
        if self._timer is None or deadline < self._timer_at:
            self._arm(loop, deadline)

    def clear(self) -> None:
        self._queues.clear()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _arm(self, loop: asyncio.AbstractEventLoop, when: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer, self._timer_at = loop.call_at(when, self._expire, loop), when

    def _expire(self, loop: asyncio.AbstractEventLoop) -> None:
        self._timer = None
        now = loop.time()
        earliest = None
        for budget, queue in list(self._queues.items()):
            while queue and (queue[0][0] <= now or queue[0][1].done()):
                settle(queue.popleft()[1], BUDGET_EXCEEDED)
            if not queue:
                del self._queues[budget]
            elif earliest is None or queue[0][0] < earliest:
                earliest = queue[0][0]
        if earliest is not None:
            self._arm(loop, earliest)
