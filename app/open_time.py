"""Open-time content: a block's rendered body for a recipient, within the block's time budget.

Order of lookup: the in-process cache of rendered bodies, then the profile store. A cold lookup is
shared by every concurrent request for the same key (coalescing); when it misses the budget the
caller gets the block's static fallback and the lookup still completes and fills the cache, so the
next open is served fresh. Unknown recipients are remembered briefly (negative cache) so a flood of
opens for them never reaches the store.

The cold path is built from callbacks and plain futures (the store calls back with the profile,
each request awaits one future) and one timer per budget rather than a Task, ``asyncio.wait`` and a
timer per request: those cost more than the SQLite read itself.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Mapping
from functools import partial
from typing import Any, NamedTuple

import orjson

from app.cache import BoundedCache
from app.campaigns import Campaign, ListBlock
from app.render.json import render_list
from app.store.base import Profile, ProfileStore, StoreError

logger = logging.getLogger(__name__)

# A cached entry is either the encoded body (bytes) or the reason to serve the fallback (str).
Entry = bytes | str
Key = tuple[str, str, str]


class Outcome(NamedTuple):
    body: bytes
    fallback_reason: str | None = None


class ListContent:
    """Serves list blocks from cache or store, never later than the block's budget."""

    def __init__(
        self,
        store: ProfileStore,
        cache: BoundedCache[Key, Entry],
        *,
        ttl_seconds: float,
        negative_ttl_seconds: float,
    ) -> None:
        self._store = store
        self._cache = cache
        self._ttl = ttl_seconds
        self._negative_ttl = negative_ttl_seconds
        # Requests waiting on each key being fetched: they share one store lookup.
        self._inflight: dict[Key, list[asyncio.Future[Entry]]] = {}
        self._stale: set[Key] = set()  # fetched before a profile change: answer, but don't cache
        self._deadlines = Deadlines()

    def cached(self, campaign: str, block: ListBlock, recipient: str) -> Outcome | None:
        """The fast path: a cache hit answers without awaiting anything."""
        entry = self._cache.get((campaign, block.name, recipient))
        return None if entry is None else self._outcome(block, entry)

    async def load(self, campaign: str, block: ListBlock, recipient: str) -> Outcome:
        """Fetch and render within the block's budget; a late fetch still fills the cache."""
        key = (campaign, block.name, recipient)
        waiter: asyncio.Future[Entry] = asyncio.get_running_loop().create_future()
        waiting = self._inflight.get(key)
        if waiting is None:
            self._inflight[key] = [waiter]
            self._store.fetch(recipient, partial(self._fetched, key, block))
        else:
            waiting.append(waiter)
        self._deadlines.add(waiter, block.budget_s)
        return self._outcome(block, await waiter)

    async def profile(self, recipient: str, budget_s: float) -> tuple[dict[str, Any] | None, str | None]:
        """The recipient's attributes within the budget, or None and the reason (for whole-page views)."""
        task = asyncio.ensure_future(self._store.get(recipient))
        done, _ = await asyncio.wait((task,), timeout=budget_s)
        if not done:
            task.cancel()
            return None, "budget-exceeded"
        try:
            profile = task.result()
        except StoreError:
            return None, "store-error"
        if profile is None:
            return None, "unknown-recipient"
        data = orjson.loads(profile.attributes)
        return (data, None) if isinstance(data, dict) else (None, "bad-profile")

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
        """Release opens still waiting on the store (on shutdown)."""
        for waiting in self._inflight.values():
            for waiter in waiting:
                _settle(waiter, "store-error")
        self._inflight.clear()
        self._deadlines.clear()

    def _outcome(self, block: ListBlock, entry: Entry) -> Outcome:
        if isinstance(entry, bytes):
            return Outcome(entry)
        return Outcome(block.fallback_body, entry)

    def _fetched(self, key: Key, block: ListBlock, result: Profile | StoreError | None) -> None:
        """The store answered: render, cache, and wake every open waiting on this key."""
        waiting = self._inflight.pop(key, [])
        entry: Entry
        if isinstance(result, StoreError):
            # Not cached: the next open retries the store.
            logger.warning("profile store failed for block %s/%s: %s", key[0], key[1], result)
            entry = "store-error"
        else:
            entry = "unknown-recipient" if result is None else _render(block, result.attributes)
            if key in self._stale:
                self._stale.discard(key)
            else:
                self._cache.set(key, entry, self._block_ttl(block, entry))
        for waiter in waiting:
            _settle(waiter, entry)

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

    def add(self, waiter: asyncio.Future[Entry], budget_s: float) -> None:
        loop = asyncio.get_running_loop()
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


def _render(block: ListBlock, attributes: bytes) -> Entry:
    try:
        data = orjson.loads(attributes)
    except orjson.JSONDecodeError:
        logger.error("stored attributes are not JSON for a recipient of block %s", block.name)
        return "bad-profile"
    if not isinstance(data, dict):
        return "bad-profile"
    body = render_list(block, data)
    return "no-data" if body is None else body
