"""GCRA (the generic cell rate algorithm): a token bucket kept as one number per key.

A key's state is its theoretical arrival time (TAT): when its bucket would be full again. A request at
``now`` costs one emission interval ``T = 1 / per_second``; it is allowed when, after paying, the bucket
is not over its ``burst`` (``new_tat - now <= burst * T``). So ``burst`` requests pass at once, then one
every ``T``. Pure: time is an argument. The Redis backend runs the same arithmetic in Lua
(``app.shared.client.GCRA``); both answer with what ``Decision.of`` needs.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

_RATE = re.compile(
    r"(?P<count>\d+(?:\.\d+)?)\s*/\s*(?P<unit>s|sec|second|m|min|minute)(?:\s+burst\s+(?P<burst>\d+))?"
)
# Sums of float intervals drift by ~1e-15 s: never refuse a request for less than this.
_SLACK = 1e-9
_UNIT_SECONDS = {"s": 1.0, "sec": 1.0, "second": 1.0, "m": 60.0, "min": 60.0, "minute": 60.0}


@dataclass(frozen=True, slots=True)
class Rate:
    """``per_second`` sustained, ``burst`` at once; ``Rate.OFF`` (0) never limits."""

    per_second: float
    burst: int

    @property
    def enabled(self) -> bool:
        return self.per_second > 0

    @property
    def interval(self) -> float:
        """Seconds one request costs (the emission interval T)."""
        return 1.0 / self.per_second

    def __str__(self) -> str:
        if not self.enabled:
            return "0"
        count = f"{self.per_second:g}" if self.per_second >= 1 else f"{self.per_second * 60:g}"
        unit = "s" if self.per_second >= 1 else "min"
        return f"{count}/{unit} burst {self.burst}"


OFF = Rate(0.0, 0)


def parse_rate(value: Any) -> Rate:
    """``"N/s"``, ``"N/min"``, either with ``" burst M"`` (default: one second's worth, at least 1), or
    ``0`` / ``"0"`` / ``"off"`` for no limit. ``ValueError`` says what is expected."""
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise ValueError(f'must be like "100/s burst 200", "30/min" or 0 (off), got {value!r}')
    text = str(value).strip().lower()
    if text in ("0", "off"):
        return OFF
    match = _RATE.fullmatch(text)
    if match is None:
        raise ValueError(f'must be like "100/s burst 200", "30/min" or 0 (off), got {value!r}')
    per_second = float(match["count"]) / _UNIT_SECONDS[match["unit"]]
    if per_second <= 0:
        return OFF
    burst = int(match["burst"]) if match["burst"] else max(1, math.ceil(per_second))
    if burst < 1:
        raise ValueError("burst must be at least 1")
    return Rate(per_second, burst)


@dataclass(frozen=True, slots=True)
class Decision:
    """One request's verdict, with what the ``RateLimit-*`` and ``Retry-After`` headers say."""

    allowed: bool
    limit: int  # the burst: requests that may pass at once
    remaining: int  # requests that would pass right now, after this one
    retry_after: float  # seconds until one more request passes (0 when allowed)
    reset: float  # seconds until the bucket is full again

    @classmethod
    def of(cls, rate: Rate, allowed: bool, retry_after: float, reset: float) -> Decision:
        """From a backend's answer: allowed, seconds to wait, seconds until full (all after this request)."""
        remaining = max(0, math.floor(rate.burst - reset / rate.interval + 1e-9)) if allowed else 0
        return cls(allowed, rate.burst, remaining, max(retry_after, 0.0), max(reset, 0.0))


def decide(tat: float | None, now: float, rate: Rate) -> tuple[Decision, float | None]:
    """The verdict for a request at ``now`` on a key whose TAT is ``tat`` (None: never seen or full),
    and the key's new TAT (None: unchanged, the request was refused)."""
    interval = rate.interval
    start = now if tat is None or tat < now else tat
    new_tat = start + interval
    allow_at = new_tat - rate.burst * interval
    if now + _SLACK < allow_at:
        return Decision.of(rate, False, allow_at - now, start - now), None
    return Decision.of(rate, True, 0.0, new_tat - now), new_tat
