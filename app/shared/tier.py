"""The shared tier of one process, as ``app.services`` builds it when ``redis_url`` is set."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from app.security.webhook_auth import ReplayGuard
from app.shared.client import SharedRedis
from app.shared.config import RedisConfig
from app.shared.invalidation import RedisInvalidation
from app.shared.limits import SharedLimits
from app.shared.profiles import SharedProfiles
from app.shared.replay import SharedReplayGuard
from app.store.base import ProfileRepository


@dataclass(frozen=True, slots=True)
class SharedTier:
    redis: SharedRedis
    profiles: SharedProfiles  # ``fetch`` for ProfileLoader: Redis, then the store
    invalidation: RedisInvalidation
    replay_guard: SharedReplayGuard
    limits: SharedLimits  # rate-limit buckets of every node

    @property
    def up(self) -> bool:
        """Redis answers lately and this process hears invalidations (what /readyz and /metrics say)."""
        return self.invalidation.connected and not self.redis.open

    async def check(self) -> bool:
        """Like ``up``, asking Redis when the breaker has doubts (for /readyz)."""
        return self.invalidation.connected and (self.redis.closed or await self.redis.ping())

    async def aclose(self) -> None:
        await self.invalidation.aclose()  # tries to announce the backlog first, for a bounded time
        await self.profiles.aclose()
        await self.redis.aclose()


def open_shared(config: RedisConfig, store: ProfileRepository, tolerance_s: float) -> SharedTier:
    """The tier; call ``invalidation.start()`` on a running loop to hear other processes."""
    redis = SharedRedis(config)
    return SharedTier(
        redis,
        SharedProfiles(redis, store),
        RedisInvalidation(redis),
        SharedReplayGuard(redis, ReplayGuard(tolerance_s), tolerance_s),
        SharedLimits(redis),
    )


@asynccontextmanager
async def announcer(config: RedisConfig) -> AsyncIterator[RedisInvalidation]:
    """Invalidation for a writer that runs in its own process (``opentime import``): it tombstones and
    publishes like a server's, hears nothing, announces what Redis missed after each change that
    reaches it, and on the way out tries once more (``backlog`` then says how many recipients are
    still unannounced)."""
    redis = SharedRedis(config)
    invalidation = RedisInvalidation(redis, drains=True)
    try:
        yield invalidation
    finally:
        try:
            await invalidation.announce_backlog()
        finally:
            await redis.aclose()
