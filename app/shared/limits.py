"""Rate-limit buckets every node shares: one GCRA script call per request (``SharedRedis.gcra``).

Keys are ``<prefix>rl:<scope>:<identity>``: an API key id or a webhook secret's fingerprint, never a
secret or personal data. Redis's own clock decides, so nodes whose clocks differ still count one budget.
When Redis does not answer within ``redis_timeout_ms`` (or its breaker is open) ``check`` answers None
and the process's own buckets decide (``app.limits.limiter``).
"""

from __future__ import annotations

from app.limits.rate import Decision, Rate
from app.shared.client import SharedRedis

MICROSECONDS = 1_000_000


class SharedLimits:
    """``SharedBuckets`` over Redis."""

    def __init__(self, redis: SharedRedis) -> None:
        self._redis = redis

    async def check(self, key: str, rate: Rate) -> Decision | None:
        interval_us = max(1, round(rate.interval * MICROSECONDS))
        answer = await self._redis.gcra(f"{self._redis.prefix}rl:{key}", interval_us, rate.burst)
        if answer is None:
            return None
        allowed, retry_us, reset_us = answer
        return Decision.of(rate, allowed, retry_us / MICROSECONDS, reset_us / MICROSECONDS)
