"""Open-time content: a block's rendered body for a recipient, within the block's time budget.

Order of lookup: the in-process cache of rendered bodies, then the profile store. A cold lookup
runs as a task shared by every concurrent request for the same key (coalescing); when it misses
the budget the caller gets the block's static fallback and the task keeps running, so the next
open is served fresh from the cache. Unknown recipients are remembered briefly (negative cache)
so a flood of opens for them never reaches the store.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any

import orjson

from app.cache import BoundedCache
from app.campaigns import Campaign, ListBlock
from app.render.json import render_list
from app.store.base import Profile, ProfileStore, StoreError

logger = logging.getLogger(__name__)

# A cached entry is either the encoded body (bytes) or the reason to serve the fallback (str).
Entry = bytes | str
Key = tuple[str, str, str]


@dataclass(frozen=True, slots=True)
class Outcome:
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
        # One future per key being fetched: concurrent opens of the same key share the lookup.
        self._inflight: dict[Key, asyncio.Future[Entry]] = {}

    def cached(self, campaign: str, block: ListBlock, recipient: str) -> Outcome | None:
        """The fast path: a cache hit answers without awaiting anything."""
        entry = self._cache.get((campaign, block.name, recipient))
        return None if entry is None else self._outcome(block, entry)

    async def load(self, campaign: str, block: ListBlock, recipient: str) -> Outcome:
        """Fetch and render within the block's budget; a late fetch still fills the cache."""
        key = (campaign, block.name, recipient)
        loop = asyncio.get_running_loop()
        pending = self._inflight.get(key)
        if pending is None:
            pending = self._inflight[key] = loop.create_future()
            self._store.lookup(recipient).add_done_callback(partial(self._fetched, key, block, pending))
        # Plain futures and one timer instead of a Task and asyncio.wait: this is the cold hot path.
        waiter: asyncio.Future[Entry] = loop.create_future()
        timer = loop.call_later(block.budget_s, _settle, waiter, "budget-exceeded")
        pending.add_done_callback(partial(_relay, waiter))
        try:
            return self._outcome(block, await waiter)
        finally:
            timer.cancel()

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
        pending = self._inflight.get(key)
        if pending is not None:
            # It may have read the old profile: drop whatever it caches once it is done.
            pending.add_done_callback(lambda _: self._cache.discard(key))

    async def aclose(self) -> None:
        """Release opens still waiting on the store (on shutdown)."""
        for pending in list(self._inflight.values()):
            _settle(pending, "store-error")
        self._inflight.clear()

    def _outcome(self, block: ListBlock, entry: Entry) -> Outcome:
        if isinstance(entry, bytes):
            return Outcome(entry)
        return Outcome(block.fallback_body, entry)

    def _fetched(
        self,
        key: Key,
        block: ListBlock,
        pending: asyncio.Future[Entry],
        lookup: asyncio.Future[Profile | None],
    ) -> None:
        """Store answered: render, cache, and wake every open waiting on this key."""
        if self._inflight.get(key) is pending:
            del self._inflight[key]
        if pending.done():  # shut down meanwhile
            return
        if lookup.cancelled() or lookup.exception() is not None:
            # Not cached: the next open retries the store.
            logger.warning("profile store failed for block %s/%s: %r", key[0], key[1], lookup.exception())
            pending.set_result("store-error")
            return
        profile = lookup.result()
        entry: Entry = "unknown-recipient" if profile is None else _render(block, profile.attributes)
        self._cache.set(key, entry, self._block_ttl(block, entry))
        pending.set_result(entry)

    def _block_ttl(self, block: ListBlock, entry: Entry) -> float:
        if isinstance(entry, str):
            return self._negative_ttl
        return block.cache_ttl_s or self._ttl


def _settle(future: asyncio.Future[Entry], entry: Entry) -> None:
    if not future.done():
        future.set_result(entry)


def _relay(waiter: asyncio.Future[Entry], pending: asyncio.Future[Entry]) -> None:
    if not pending.cancelled():
        _settle(waiter, pending.result())


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
