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
from typing import Any

import orjson

from app.cache import BoundedCache
from app.campaigns import Campaign, ListBlock
from app.render.json import render_list
from app.store.base import ProfileStore, StoreError

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
        self._inflight: dict[Key, asyncio.Task[Entry]] = {}

    def cached(self, campaign: str, block: ListBlock, recipient: str) -> Outcome | None:
        """The fast path: a cache hit answers without awaiting anything."""
        entry = self._cache.get((campaign, block.name, recipient))
        return None if entry is None else self._outcome(block, entry)

    async def load(self, campaign: str, block: ListBlock, recipient: str) -> Outcome:
        key = (campaign, block.name, recipient)
        task = self._inflight.get(key)
        if task is None:
            task = asyncio.get_running_loop().create_task(self._fetch(key, block))
            self._inflight[key] = task
            task.add_done_callback(lambda _: self._inflight.pop(key, None))
        done, _ = await asyncio.wait((task,), timeout=block.budget_s)
        if not done:
            return Outcome(block.fallback_body, "budget-exceeded")
        return self._outcome(block, task.result())

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
        task = self._inflight.get(key)
        if task is not None:
            # It may have read the old profile: drop whatever it caches once it is done.
            task.add_done_callback(lambda _: self._cache.discard(key))

    async def aclose(self) -> None:
        """Cancel lookups still running in the background (on shutdown)."""
        tasks = list(self._inflight.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _outcome(self, block: ListBlock, entry: Entry) -> Outcome:
        if isinstance(entry, bytes):
            return Outcome(entry)
        return Outcome(block.fallback_body, entry)

    async def _fetch(self, key: Key, block: ListBlock) -> Entry:
        try:
            profile = await self._store.get(key[2])
        except StoreError:
            # Not cached: the next open retries the store.
            logger.warning("profile store failed for block %s/%s", key[0], key[1], exc_info=True)
            return "store-error"
        if profile is None:
            self._cache.set(key, "unknown-recipient", self._negative_ttl)
            return "unknown-recipient"
        entry: Entry = _render(block, profile.attributes)
        self._cache.set(key, entry, self._block_ttl(block, entry))
        return entry

    def _block_ttl(self, block: ListBlock, entry: Entry) -> float:
        if isinstance(entry, str):
            return self._negative_ttl
        return block.cache_ttl_s or self._ttl


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
