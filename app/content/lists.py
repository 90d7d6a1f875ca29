"""Open-time content: a block's rendered body for a recipient, within the block's time budget.

Order of lookup: the in-process cache of rendered bodies, then the profile store, then (on a store
miss, when one is configured) the upstream profile API. A cold lookup is
shared by every concurrent request for the same key (coalescing); when it misses the budget the
caller gets the block's static fallback and the lookup still completes and fills the cache, so the
next open is served fresh. Unknown recipients are remembered briefly (negative cache) so a flood of
opens for them never reaches the store.

The cold path is built from callbacks and plain futures (the store calls back with the profile,
each request awaits one future) and one timer per budget rather than a Task, ``asyncio.wait`` and a
timer per request: those cost more than the SQLite read itself.

A rendered entry keeps the time its data last changed (the profile's ``updated_at``, or when the
upstream answered), so every response, cache hits too, can report the age of the data it used.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from functools import partial
from typing import Any, NamedTuple, TypeVar

import orjson

from app.campaigns.loader import Campaign, ListBlock
from app.content.cache import BoundedCache
from app.log_throttle import ThrottledLog
from app.render.json import render_list
from app.store.base import Profile, ProfileStore, StoreError
from app.upstream.client import NOT_FOUND, UpstreamClient, UpstreamResult

logger = logging.getLogger(__name__)

T = TypeVar("T")
UNKNOWN = "unknown-recipient"


class Rendered(NamedTuple):
    body: bytes
    updated_at: float  # when the data it was rendered from last changed (wall clock, seconds)


# A cached entry is either the rendered body or the reason to serve the fallback (str).
Entry = Rendered | str
Key = tuple[str, str, str]


class Outcome(NamedTuple):
    body: bytes
    fallback_reason: str | None = None
    updated_at: float | None = None  # None for a fallback: no recipient data was used


class Found(NamedTuple):
    """A recipient's profile as the open-time path sees it, wherever it came from."""

    attributes: dict[str, Any]
    updated_at: float
    version: int | None  # None: from the upstream, which has no versions
    source: str  # "store" or "upstream"


def entry_size(entry: Entry) -> int:
    return len(entry) if isinstance(entry, str) else len(entry[0])


class ListContent:
    """Serves list blocks from cache or store, never later than the block's budget."""

    def __init__(
        self,
        store: ProfileStore,
        cache: BoundedCache[Key, Entry],
        *,
        ttl_seconds: float,
        negative_ttl_seconds: float,
        upstream: UpstreamClient | None = None,
        upstream_ttl_seconds: float | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._cache = cache
        self._ttl = ttl_seconds
        self._negative_ttl = negative_ttl_seconds
        self.upstream = upstream
        # Renders of upstream data live no longer than the upstream's freshness.
        self._upstream_ttl = upstream_ttl_seconds or ttl_seconds
        self._clock = clock
        self._pulls: set[asyncio.Task[UpstreamResult]] = set()
        # Requests waiting on each key being fetched: they share one store lookup.
        self._inflight: dict[Key, list[asyncio.Future[Entry]]] = {}
        self._stale: set[Key] = set()  # fetched before a profile change: answer, but don't cache
        self._deadlines = Deadlines()
        self._loop: asyncio.AbstractEventLoop | None = None  # the loop opens are served on
        self._warnings = ThrottledLog(logger)

    def cached(self, campaign: str, block: ListBlock, recipient: str) -> Outcome | None:
        """The fast path: a cache hit answers without awaiting anything."""
        entry = self._cache.get((campaign, block.name, recipient))
        return None if entry is None else self._outcome(block, entry)

    async def load(self, campaign: str, block: ListBlock, recipient: str) -> Outcome:
        """Fetch and render within the block's budget; a late fetch still fills the cache."""
        key = (campaign, block.name, recipient)
        loop = self._loop
        if loop is None or loop.is_closed():
            # Remembered: in CPython 3.11 every get_running_loop() is a getpid() system call.
            loop = self._loop = asyncio.get_running_loop()
        waiter: asyncio.Future[Entry] = loop.create_future()
        waiting = self._inflight.get(key)
        if waiting is None:
            self._inflight[key] = [waiter]
            self._store.fetch(recipient, partial(self._fetched, key, block))
        else:
            waiting.append(waiter)
        self._deadlines.add(loop, waiter, block.budget_s)
        return self._outcome(block, await waiter)

    @property
    def cache(self) -> BoundedCache[Key, Entry]:
        return self._cache

    async def profile(self, recipient: str, budget_s: float) -> tuple[dict[str, Any] | None, str | None]:
        """The recipient's attributes within the budget, or None and the reason (for whole-page views)."""
        found = await self.find(recipient, budget_s)
        return (None, found) if isinstance(found, str) else (found.attributes, None)

    async def find(self, recipient: str, budget_s: float) -> Found | str:
        """Store, then upstream on a store miss, within the budget; or the reason there is nothing."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + budget_s
        profile = await _within(self._store.get(recipient), budget_s)
        if isinstance(profile, Profile):
            return _found(profile.attributes, profile.updated_at, profile.version, "store")
        if profile is not None or self.upstream is None:
            return profile or UNKNOWN
        result = await _within(self.upstream.fetch(recipient), deadline - loop.time())
        if isinstance(result, str):
            return result
        if result.attributes is None:
            return UNKNOWN if result.reason == NOT_FOUND else result.reason or UNKNOWN
        return _found(result.attributes, self._fetched_at(result), None, "upstream")

    def forget(self, recipient: str, campaigns: Mapping[str, Campaign]) -> None:
        """Drop the recipient's cached outputs after their profile changed (e.g. by a form)."""
        for campaign in campaigns.values():
            for block in campaign.lists:
                self._forget((campaign.name, block, recipient))

    def _forget(self, key: Key) -> None:
        self._cache.discard(key)
        if key in self._inflight:
            self._stale.add(key)  # its lookup may have read the old profile

    async def aclose(self) -> None:
        """Release opens still waiting on the store or the upstream (on shutdown)."""
        for task in list(self._pulls):
            task.cancel()
        await asyncio.gather(*self._pulls, return_exceptions=True)
        for waiting in self._inflight.values():
            for waiter in waiting:
                _settle(waiter, "store-error")
        self._inflight.clear()
        self._deadlines.clear()

    def _outcome(self, block: ListBlock, entry: Entry) -> Outcome:
        if isinstance(entry, str):
            return Outcome(block.fallback_body, entry)
        return Outcome(entry[0], None, entry[1])

    def _fetched(self, key: Key, block: ListBlock, result: Profile | StoreError | None) -> None:
        """The store answered: render, cache, and wake every open waiting on this key."""
        try:
            if isinstance(result, Profile):  # the usual answer first: one call less per cold open
                entry = _render(block, result.attributes, result.updated_at)
                self._answer(key, entry, self._block_ttl(block, entry))
            else:
                self._settle_fetched(key, block, result)
        except Exception:
            # Whatever one profile holds, the waiters of this key (and the rest of the store's batch)
            # must still be answered, or their opens would wait out the budget forever.
            logger.exception("rendering block %s/%s failed", key[0], key[1])
            self._answer(key, "internal-error", None)

    def _settle_fetched(self, key: Key, block: ListBlock, result: StoreError | None) -> None:
        if result is None and self.upstream is not None:
            self._pull(key, block, self.upstream)  # the waiters stay in _inflight
            return
        if isinstance(result, StoreError):
            # Not cached: the next open retries the store.
            self._warnings.warning(
                "store", "profile store failed for block %s/%s: %s", key[0], key[1], result
            )
            self._answer(key, "store-error", None)
        else:
            self._answer(key, UNKNOWN, self._negative_ttl)

    def _pull(self, key: Key, block: ListBlock, upstream: UpstreamClient) -> None:
        """Ask the upstream; Deadlines answers the waiters if it is late, and its answer fills the cache."""
        task = asyncio.ensure_future(upstream.fetch(key[2]))
        self._pulls.add(task)
        task.add_done_callback(partial(self._pulled, key, block))

    def _pulled(self, key: Key, block: ListBlock, task: asyncio.Task[UpstreamResult]) -> None:
        self._pulls.discard(task)
        try:
            self._settle_pulled(key, block, None if task.cancelled() else task.result())
        except Exception:
            logger.exception("rendering block %s/%s from the upstream failed", key[0], key[1])
            self._answer(key, "internal-error", None)

    def _settle_pulled(self, key: Key, block: ListBlock, result: UpstreamResult | None) -> None:
        if result is None or (result.attributes is None and result.reason != NOT_FOUND):
            # Not cached: the next open asks again (the upstream client's breaker guards the upstream).
            self._answer(key, "upstream-error" if result is None else result.reason or "upstream-error", None)
        elif result.attributes is None:
            self._answer(key, UNKNOWN, self._negative_ttl)
        else:
            entry = _render(block, result.attributes, self._fetched_at(result))
            ttl = min(self._block_ttl(block, entry), self._upstream_ttl)
            self._answer(key, entry, self._negative_ttl if isinstance(entry, str) else ttl)

    def _answer(self, key: Key, entry: Entry, ttl: float | None) -> None:
        """Cache ``entry`` for ``ttl`` (None: don't) unless the profile changed meanwhile; wake waiters."""
        waiting = self._inflight.pop(key, [])
        if key in self._stale:
            self._stale.discard(key)
        elif ttl is not None:
            self._cache.set(key, entry, ttl)
        for waiter in waiting:
            _settle(waiter, entry)

    def _fetched_at(self, result: UpstreamResult) -> float:
        return self._clock() if result.fetched_at is None else result.fetched_at

    def _block_ttl(self, block: ListBlock, entry: Entry) -> float:
        if isinstance(entry, str):
            return self._negative_ttl
        return block.cache_ttl_s or self._ttl


def _settle(future: asyncio.Future[Entry], entry: Entry) -> None:
    if not future.done():
        future.set_result(entry)


class Deadlines:
    """Settles waiters with ``budget-exceeded`` when their budget runs out, using one timer.

    Waiters with the same budget expire in the order they were added, so one FIFO per budget value
    and a single timer armed for the earliest head replace a timer per request.
    """

    def __init__(self) -> None:
        self._queues: dict[float, deque[tuple[float, asyncio.Future[Entry]]]] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0

    def add(self, loop: asyncio.AbstractEventLoop, waiter: asyncio.Future[Entry], budget_s: float) -> None:
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
        self._timer, self._timer_at = loop.call_at(when, self._expire), when

    def _expire(self) -> None:
        self._timer = None
        loop = asyncio.get_running_loop()
        now = loop.time()
        earliest = None
        for budget, queue in list(self._queues.items()):
            while queue and (queue[0][0] <= now or queue[0][1].done()):
                _settle(queue.popleft()[1], "budget-exceeded")
            if not queue:
                del self._queues[budget]
            elif earliest is None or queue[0][0] < earliest:
                earliest = queue[0][0]
        if earliest is not None:
            self._arm(loop, earliest)


async def _within(awaitable: Awaitable[T], budget_s: float) -> T | str:
    """The awaitable's result, "store-error", or "budget-exceeded" (the work is then cancelled)."""
    task = asyncio.ensure_future(awaitable)
    done, _ = await asyncio.wait((task,), timeout=max(budget_s, 0.0))
    if not done:
        task.cancel()
        return "budget-exceeded"
    try:
        return task.result()
    except StoreError:
        return "store-error"


def _found(attributes: bytes, updated_at: float, version: int | None, source: str) -> Found | str:
    try:
        data = orjson.loads(attributes)
    except orjson.JSONDecodeError:
        return "bad-profile"
    return Found(data, updated_at, version, source) if isinstance(data, dict) else "bad-profile"


def _render(block: ListBlock, attributes: bytes, updated_at: float) -> Entry:
    try:
        data = orjson.loads(attributes)
    except orjson.JSONDecodeError:
        logger.error("stored attributes are not JSON for a recipient of block %s", block.name)
        return "bad-profile"
    if not isinstance(data, dict):
        return "bad-profile"
    body = render_list(block, data)
    return "no-data" if body is None else Rendered(body, updated_at)
