"""The bounded in-process cache of rendered open-time responses.

Memory must not grow with the number of recipients, so the cache is capped in bytes (the
encoded body plus a fixed per-entry overhead) and evicts the least recently used entry; every
entry also expires after its TTL so a re-open eventually sees fresh data even without an event.
Values are kept encoded: see ../shared/perf-notes.md (dicts cost ~2x the memory and long GC pauses).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")

# Measured cost of one entry beyond its body's length (tracemalloc, 100k entries): the OrderedDict
# node, the key tuple and its recipient string, the (expiry, value, size) tuple and the bytes header.
ENTRY_OVERHEAD = 400


@dataclass(slots=True)
class CacheStats:
    hits: int = 0
    misses: int = 0
    evictions: int = 0


class BoundedCache(Generic[K, V]):
    """LRU cache with a byte cap and a per-entry TTL (monotonic clock, injectable for tests)."""

    def __init__(
        self,
        max_bytes: int,
        *,
        size_of: Callable[[V], int],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._entries: OrderedDict[K, tuple[float, V, int]] = OrderedDict()
        self._max_bytes = max_bytes
        self._size_of = size_of
        self._clock = clock
        self.bytes = 0
        self.stats = CacheStats()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: K) -> V | None:
        entry = self._entries.get(key)
        if entry is None or entry[0] <= self._clock():
            if entry is not None:
                self._drop(key)
            self.stats.misses += 1
            return None
        self._entries.move_to_end(key)
        self.stats.hits += 1
        return entry[1]

    def set(self, key: K, value: V, ttl: float) -> None:
        size = self._size_of(value) + ENTRY_OVERHEAD
        if size > self._max_bytes:
            return
        entries = self._entries
        replaced = entries.pop(key, None)
        if replaced is not None:
            self.bytes -= replaced[2]
        entries[key] = (self._clock() + ttl, value, size)
        self.bytes += size
        # A full cache evicts on every insert (every cold open): one popitem per eviction.
        while self.bytes > self._max_bytes:
            self.bytes -= entries.popitem(last=False)[1][2]
            self.stats.evictions += 1

    def discard(self, key: K) -> None:
        if key in self._entries:
            self._drop(key)

    def clear(self) -> None:
        self._entries.clear()
        self.bytes = 0

    def _drop(self, key: K) -> None:
        _, _, size = self._entries.pop(key)
        self.bytes -= size
