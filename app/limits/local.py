"""The buckets of this process: one TAT per key (``app.limits.rate``), bounded in number.

Keys are authenticated identities (API key ids, webhook secret fingerprints), so there are few; the
bound is a guard all the same. A key whose bucket is full again is the same as an absent one, so those
go first when the table is full, then the least recently used.
"""

from __future__ import annotations

from collections import OrderedDict

from app.limits.rate import Decision, Rate, decide

MAX_KEYS = 100_000


class LocalBuckets:
    """GCRA state by key in a dict; not shared with other processes."""

    def __init__(self, max_keys: int = MAX_KEYS) -> None:
        self._tats: OrderedDict[str, float] = OrderedDict()
        self._max_keys = max_keys

    def __len__(self) -> int:
        return len(self._tats)

    def check(self, key: str, rate: Rate, now: float) -> Decision:
        decision, tat = decide(self._tats.get(key), now, rate)
        if tat is not None:
            self._tats[key] = tat
            self._tats.move_to_end(key)
            if len(self._tats) > self._max_keys:
                self._shrink(now)
        return decision

    def _shrink(self, now: float) -> None:
        full = [key for key, tat in self._tats.items() if tat <= now]
        for key in full:
            del self._tats[key]
        # Down to 90%, so the scan above runs once per tenth of the table, not once per request.
        while len(self._tats) > self._max_keys * 9 // 10:
            self._tats.popitem(last=False)
