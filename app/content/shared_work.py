"""Cache, coalescing, budget and forget in one place, shared by amp-list bodies, profile lookups and images.

A key's value comes from the cache, or from one piece of work that every concurrent request for the
key waits on (coalescing), each within its own budget (``app.content.budget``). The work answers
with ``answer(key, value, ttl)``: the value is cached (unless ``ttl`` is None, or the key was
forgotten while the work ran, since the work may have read data that has changed since) and every
waiter still waiting gets it. Values that are ``str`` are fallback reasons, cached or not like any
other value (a negative cache entry is a reason with a TTL).

Callers call ``join`` and start the work themselves when they are the first waiter: no callable is
built per request on the hot path.
"""

from __future__ import annotations

import asyncio
from collections.abc import Hashable
from typing import Generic, TypeVar

from app.content.budget import Deadlines, settle
from app.content.cache import BoundedCache

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class SharedWork(Generic[K, V]):
    """Values by key: cached, or computed once for every waiter, each waiter within its budget."""

    def __init__(self, cache: BoundedCache[K, V | str] | None, deadlines: Deadlines) -> None:
        self.cache = cache  # None: nothing is kept once the waiters have their answer
        self.deadlines = deadlines
        self._inflight: dict[K, list[asyncio.Future[V | str]]] = {}
        self._stale: set[K] = set()  # forgotten while in flight: answer the waiters, keep nothing
        self._loop: asyncio.AbstractEventLoop | None = None

    def get(self, key: K) -> V | str | None:
        """The cached value (the fast path: answers without awaiting)."""
        return None if self.cache is None else self.cache.get(key)

    def join(self, key: K, budget_s: float) -> tuple[asyncio.Future[V | str], bool]:
        """A future for the key's value within ``budget_s``, and whether the caller must start the work."""
        loop = self._loop
        if loop is None or loop.is_closed():
            # Remembered: in CPython 3.11 every get_running_loop() is a getpid() system call.
            loop = self._loop = asyncio.get_running_loop()
        waiter: asyncio.Future[V | str] = loop.create_future()
        waiting = self._inflight.get(key)
        first = waiting is None
        if waiting is None:
            self._inflight[key] = [waiter]
        else:
            waiting.append(waiter)
        self.deadlines.add(loop, waiter, budget_s)
        return waiter, first

    def answer(self, key: K, value: V | str, ttl: float | None) -> None:
        """The work for ``key`` is done: keep ``value`` for ``ttl`` seconds (None: don't), wake waiters."""
        waiting = self._inflight.pop(key, ())
        if key in self._stale:
            self._stale.discard(key)
        elif ttl is not None and self.cache is not None:
            self.cache.set(key, value, ttl)
        for waiter in waiting:
            settle(waiter, value)

    def running(self, key: K) -> bool:
        """Whether the key's work has started and not answered yet."""
        return key in self._inflight

    def waited_for(self, key: K) -> bool:
        """Whether a request still waits for the key's work (its waiters are not all answered, by the
        work or by their deadlines): work nobody waits for may be dropped before it starts."""
        return any(not waiter.done() for waiter in self._inflight.get(key, ()))

    @property
    def pending(self) -> int:
        """Keys whose work is still running."""
        return len(self._inflight)

    def forget(self, key: K) -> None:
        """The data behind ``key`` changed: drop its value, and don't keep what running work returns."""
        if self.cache is not None:
            self.cache.discard(key)
        if key in self._inflight:
            self._stale.add(key)

    def forget_all(self) -> None:
        """Like ``forget`` for every key (invalidations may have been missed)."""
        if self.cache is not None:
            self.cache.clear()
        self._stale.update(self._inflight)

    def close(self, reason: str) -> None:
        """Answer every waiter with ``reason`` (on shutdown)."""
        for waiting in self._inflight.values():
            for waiter in waiting:
                settle(waiter, reason)
        self._inflight.clear()
        self._stale.clear()
