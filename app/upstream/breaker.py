"""A circuit breaker as a pure state machine (no I/O, no event loop; time from an injected clock).

closed ──N consecutive failures──► open ──reset time passes──► half-open ──probe succeeds──► closed
                                    ▲                               │
                                    └────────probe fails────────────┘

While open every call is refused at once. Half-open lets exactly one probe through; if the probe never
reports back (its caller was cancelled), another probe is allowed after the reset time again, so the
breaker cannot stay stuck half-open.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from enum import StrEnum


class BreakerState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half-open"


class CircuitBreaker:
    """Counts consecutive failures; callers ask ``allow()`` before a call and report its outcome."""

    def __init__(self, threshold: int, reset_after_s: float, *, clock: Callable[[], float] = time.monotonic):
        if threshold < 1 or reset_after_s <= 0:
            raise ValueError("breaker threshold must be >= 1 and reset time > 0")
        self._threshold = threshold
        self._reset_after = reset_after_s
        self._clock = clock
        self._failures = 0
        self._opened_at: float | None = None
        self._probe_at: float | None = None

    @property
    def state(self) -> BreakerState:
        if self._opened_at is None:
            return BreakerState.CLOSED
        if self._clock() - self._opened_at < self._reset_after:
            return BreakerState.OPEN
        return BreakerState.HALF_OPEN

    @property
    def failures(self) -> int:
        return self._failures

    def allow(self) -> bool:
        """May a call go out now? In half-open this claims the single probe slot."""
        if self._opened_at is None:
            return True
        now = self._clock()
        if now - self._opened_at < self._reset_after:
            return False
        if self._probe_at is not None and now - self._probe_at < self._reset_after:
            return False
        self._probe_at = now
        return True

    def record_success(self) -> None:
        self._failures = 0
        self._opened_at = self._probe_at = None

    def record_failure(self) -> None:
        self._failures += 1
        probe_failed = self._probe_at is not None
        if probe_failed or (self._opened_at is None and self._failures >= self._threshold):
            self._open()
        # Otherwise a call that started before the breaker opened: the open period is not extended.

    def _open(self) -> None:
        self._opened_at = self._clock()
        self._probe_at = None
