"""Plain in-process histograms that the hot paths bump and ``GET /metrics`` reads at scrape time.

No library here: a list of counts, a bisect and a float add (well under a microsecond), no locks (each
process counts on its event loop), so the open-time path and the event writer can count freely, and
code that never serves ``/metrics`` (``opentime ingest``) does not load ``prometheus_client``.
"""

from __future__ import annotations

from bisect import bisect_left

# Seconds: from "just changed" to "a week old" (a profile loaded once and never touched again).
AGE_BUCKETS = (1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 3600.0, 6 * 3600.0, 86400.0, 7 * 86400.0)


class Histogram:
    """Counts per bucket (upper bounds ``bounds``, then +Inf) and the sum of what was observed."""

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value

    def buckets(self) -> list[tuple[str, float]]:
        """Cumulative, as Prometheus wants them."""
        total, result = 0, []
        for bound, count in zip((*map(str, self.bounds), "+Inf"), self.counts, strict=True):
            total += count
            result.append((bound, float(total)))
        return result
