"""The webhook replay guard every node shares: one signed request is accepted once, anywhere.

A request is remembered as ``<prefix>replay:<timestamp>:<body sha256>`` with SET NX (aiocache ``add``)
until it leaves the signature's tolerance window; the second SET NX of the same key, on any node or
worker, finds it taken: a replay. This process's own ``ReplayGuard`` is asked first (a replay to the
same process costs no round trip) and keeps remembering, so it is ready when Redis is not.

When Redis does not answer, the local guard alone decides: the request is accepted unless this process
saw it. We fall back rather than answer 503, because Redis is an optimisation and ingestion must not
stop with it: a replay that reaches another process during the outage can only re-send the same
events, whose ids the store already holds, so they come back "duplicate" and change nothing. What the
fallback gives up is only the early 401 for such a replay across processes.
"""

from __future__ import annotations

from dataclasses import dataclass

from app.security.webhook_auth import ReplayedSignature, ReplayGuard, Verified
from app.shared.client import SharedRedis


@dataclass(slots=True)
class ReplayStats:
    replays: int = 0  # requests Redis knew (accepted before, maybe by another process)
    local_only: int = 0  # requests decided by the local guard alone: Redis did not answer


class SharedReplayGuard:
    """``RequestMemory`` over Redis, with the process's ``ReplayGuard`` in front and as the fallback."""

    def __init__(self, redis: SharedRedis, local: ReplayGuard, tolerance_s: float) -> None:
        self._redis = redis
        self._local = local
        self._tolerance = tolerance_s
        self.stats = ReplayStats()

    async def admit(self, verified: Verified, now: float) -> None:
        self._local.check(verified, now)
        # Remembered until the timestamp leaves the window (after that the signature check refuses it).
        ttl = max(verified.timestamp + self._tolerance - now, 1.0)
        added = await self._redis.add(self._key(verified), b"1", ttl)
        if added is None:
            self.stats.local_only += 1
        elif not added:
            self.stats.replays += 1
            raise ReplayedSignature("this request was already received; sign each request anew")

    async def release(self, verified: Verified) -> None:
        self._local.forget(verified)
        await self._redis.delete(self._key(verified))

    def _key(self, verified: Verified) -> str:
        return f"{self._redis.prefix}replay:{verified.timestamp}:{verified.body_digest}"
