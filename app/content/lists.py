"""List content at open time: a list block's rendered body for a recipient, within the block's budget.

Order of lookup: the in-process cache of rendered bodies, then the profile (store, then upstream:
``app.content.profiles``). Concurrent opens of one key share one lookup, each waits within its
block's budget, and a late lookup still fills the cache (``app.content.shared_work``). Unknown
recipients are remembered briefly (a negative entry) so a flood of opens for them never reaches the
store.

A rendered entry keeps the time its data last changed (the profile's ``updated_at``, or when the
upstream answered), so every response, cache hits too, can report the age of the data it used.
``find`` serves the kinds that need the whole profile (images, the web view, the personalization API)
through the same loader, coalesced per recipient, within their budget, and cached (encoded, parsed
per use) like the bodies: the same TTLs, forgotten by the same invalidations. So one token opened
over and over costs one store read per TTL, whichever kind it asks for.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any, NamedTuple

import orjson

from app.campaigns.loader import Campaign, ListBlock
from app.content.budget import Deadlines
from app.content.cache import BoundedCache
from app.content.profiles import Loaded, ProfileLoader, Pulled
from app.content.shared_work import SharedWork
from app.decisions.clicks import with_clicks
from app.decisions.decide import cached_names
from app.open_time.reasons import Reason
from app.render.json import render_list

logger = logging.getLogger(__name__)

UNKNOWN = Reason.UNKNOWN_RECIPIENT


@dataclass(slots=True)
class Rendered:
    """A list block's body for one recipient; slotted: its fields are read on every cache hit, and a
    named tuple's are not specialised by CPython 3.11's interpreter (see ``app.open_time.kind``)."""

    body: bytes
    updated_at: float  # when the data it was rendered from last changed (wall clock, seconds)
    links: tuple[str, ...] = ()  # click-tracked blocks: each item's link, by slot (app.decisions.clicks)


# A cached entry is either the rendered body or the reason to serve the fallback (str).
Entry = Rendered | str
Key = tuple[str, str, str]
# Whole profiles kept for ``find``: encoded, so a few KB each at most for typical profiles.
PROFILE_CACHE_BYTES = 8 * 1024 * 1024
READ_ONLY_LIMIT = 16_384  # parsed profiles found_now keeps (cleared when full)


class Found(NamedTuple):
    """A recipient's profile as the open-time path sees it, wherever it came from."""

    attributes: dict[str, Any]
    updated_at: float
    version: int | None  # None: from the upstream, which has no versions
    source: str  # "store" or "upstream"


def entry_size(entry: Entry | str) -> int:
    return len(entry) if isinstance(entry, str) else len(entry.body)


class ListContent:
    """Serves list blocks from cache or profile, never later than the block's budget."""

    def __init__(
        self,
        loader: ProfileLoader,
        cache: BoundedCache[Key, Entry],
        *,
        ttl_seconds: float,
        negative_ttl_seconds: float,
        upstream_ttl_seconds: float | None = None,
    ) -> None:
        self._loader = loader
        self._ttl = ttl_seconds
        self._negative_ttl = negative_ttl_seconds
        # Renders of upstream data live no longer than the upstream's freshness.
        self._upstream_ttl = upstream_ttl_seconds or ttl_seconds
        self._deadlines = Deadlines()
        self._cache = cache  # read directly on the hot path; written only through _bodies
        self._bodies: SharedWork[Key, Rendered] = SharedWork(cache, self._deadlines)
        profiles: BoundedCache[str, Loaded | str] = BoundedCache(PROFILE_CACHE_BYTES, size_of=_loaded_size)
        self._profiles: SharedWork[str, Loaded] = SharedWork(profiles, self._deadlines)
        # found_now's parsed profiles, by recipient, with the cached record they were parsed from.
        self._read_only: dict[str, tuple[Loaded, Found | str]] = {}

    @property
    def cache(self) -> BoundedCache[Key, Entry]:
        return self._cache

    @property
    def profile_cache(self) -> BoundedCache[str, Loaded | str] | None:
        return self._profiles.cache

    def cached(self, campaign: str, block: ListBlock, recipient: str) -> Entry | None:
        """The fast path: a cache hit answers without awaiting anything.

        An entry is the rendered body, or the reason to serve the block's fallback instead.
        """
        return self._cache.get((campaign, block.name, recipient))

    def load(self, campaign: str, block: ListBlock, recipient: str) -> asyncio.Future[Entry]:
        """The entry within the block's budget (a future: no coroutine per cold open); a late fetch
        still fills the cache."""
        key = (campaign, block.name, recipient)
        waiter, first = self._bodies.join(key, block.budget_s)
        if first:
            self._loader.load(
                recipient, partial(self._loaded, key, block), partial(self._bodies.waited_for, key)
            )
        return waiter

    async def profile(self, recipient: str, budget_s: float) -> tuple[dict[str, Any] | None, str | None]:
        """The recipient's attributes within the budget, or None and the reason (for whole-page views)."""
        found = await self.find(recipient, budget_s)
        return (None, found) if isinstance(found, str) else (found.attributes, None)

    async def find(self, recipient: str, budget_s: float) -> Found | str:
        """The whole profile within the budget, or the reason there is none."""
        loaded = self._profiles.get(recipient)
        if loaded is None:
            waiter, first = self._profiles.join(recipient, budget_s)
            if first:
                self._loader.load(
                    recipient, partial(self._found, recipient), partial(self._profiles.waited_for, recipient)
                )
            loaded = await waiter
        return loaded if isinstance(loaded, str) else _parsed(loaded)

    def found_now(self, recipient: str) -> Found | str | None:
        """The whole profile if it is cached now (or the reason there is none), else None: ``find``
        without waiting, for open-time decisions that read the profile on warm opens.

        Read-only: the parsed profile is kept while the cache holds the same record (checked by
        identity, so a changed or re-read profile is parsed again), and shared by every caller."""
        loaded = self._profiles.get(recipient)
        if loaded is None or isinstance(loaded, str):
            return loaded
        kept = self._read_only.get(recipient)
        if kept is not None and kept[0] is loaded:
            return kept[1]
        found = _parsed(loaded)
        if len(self._read_only) >= READ_ONLY_LIMIT:
            self._read_only.clear()
        self._read_only[recipient] = (loaded, found)
        return found

    def forget(self, recipient: str, campaigns: Mapping[str, Campaign]) -> None:
        """Drop the recipient's cached outputs after their profile changed (e.g. by a form)."""
        for campaign in campaigns.values():
            for block in cached_names(campaign.lists):
                self._bodies.forget((campaign.name, block, recipient))
        self._profiles.forget(recipient)
        self._read_only.pop(recipient, None)

    def forget_all(self) -> None:
        """Drop every cached output (this process may have missed invalidations)."""
        self._bodies.forget_all()
        self._profiles.forget_all()
        self._read_only.clear()

    async def aclose(self) -> None:
        """Release opens still waiting on the store or the upstream (on shutdown)."""
        await self._loader.aclose()
        self._bodies.close(Reason.STORE_ERROR)
        self._profiles.close(Reason.STORE_ERROR)
        self._deadlines.clear()

    def _loaded(self, key: Key, block: ListBlock, loaded: Loaded | str) -> None:
        """The profile arrived (or the reason it won't): render, cache, and wake every waiting open."""
        entry: Entry
        ttl: float | None
        try:  # one method, not two: every cold open comes through here
            if isinstance(loaded, str):
                # Store and upstream failures are not cached: the next open asks again.
                entry, ttl = loaded, self._negative_ttl if loaded == UNKNOWN else None
            else:
                entry = _render(block, loaded.attributes, loaded.updated_at)
                ttl = self._ttl_of(block, entry, pulled=isinstance(loaded, Pulled))
        except Exception:
            # Whatever one profile holds, the waiters of this key (and the rest of the store's batch)
            # must still be answered, or their opens would wait out the budget forever.
            logger.exception("rendering block %s/%s failed", key[0], key[1])
            entry, ttl = Reason.INTERNAL_ERROR, None
        self._bodies.answer(key, entry, ttl)

    def _ttl_of(self, block: ListBlock, entry: Entry, *, pulled: bool) -> float:
        if isinstance(entry, str):  # no data to show, or data that is not an object: negative entry
            return self._negative_ttl
        ttl = block.cache_ttl_s or self._ttl
        return min(ttl, self._upstream_ttl) if pulled else ttl

    def _found(self, recipient: str, loaded: Loaded | str) -> None:
        if isinstance(loaded, str):  # store and upstream failures are not kept: the next use asks again
            ttl = self._negative_ttl if loaded == UNKNOWN else None
        else:
            ttl = min(self._ttl, self._upstream_ttl) if isinstance(loaded, Pulled) else self._ttl
        self._profiles.answer(recipient, loaded, ttl)


def _loaded_size(loaded: Loaded | str) -> int:
    return len(loaded) if isinstance(loaded, str) else len(loaded.attributes)


def _parsed(loaded: Loaded) -> Found | str:
    try:
        data = orjson.loads(loaded.attributes)
    except orjson.JSONDecodeError:
        return Reason.BAD_PROFILE
    if not isinstance(data, dict):
        return Reason.BAD_PROFILE
    if isinstance(loaded, Pulled):
        return Found(data, loaded.updated_at, None, "upstream")
    return Found(data, loaded.updated_at, loaded.version, "store")


def _render(block: ListBlock, attributes: bytes, updated_at: float) -> Entry:
    try:
        data = orjson.loads(attributes)
    except orjson.JSONDecodeError:
        logger.error("stored attributes are not JSON for a recipient of block %s", block.name)
        return Reason.BAD_PROFILE
    if not isinstance(data, dict):
        return Reason.BAD_PROFILE
    body = render_list(block, data)
    if body is None:
        return Reason.NO_DATA
    if block.click_field is None:
        return Rendered(body, updated_at)
    clicked, links = with_clicks(body, block.click_field, block.click_hosts)
    return Rendered(clicked, updated_at, links)
