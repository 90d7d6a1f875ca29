"""The shared tier's settings, apart from the code that imports ``redis`` and ``aiocache``.

A process without ``redis_url`` reads this module and nothing else of ``app.shared``: those libraries
(with hiredis) are imported only where Redis is configured, so a one-process server does not carry
them (they add several MB of RSS and start-up time).
"""

from __future__ import annotations

from dataclasses import dataclass

from app.config import Settings

# Background and bulk Redis work (tombstoning an import batch, draining a backlog, the subscriber's own
# commands) gets this many times the open-time deadline: nobody waits on it, and one call may carry
# thousands of keys.
BULK_FACTOR = 10
TOMBSTONE_MIN_S = 10.0
DEFAULT_STORE_TIMEOUT_S = 5.0  # database_timeout_ms's default


@dataclass(frozen=True, slots=True)
class RedisConfig:
    url: str
    prefix: str  # of every key and channel (pub/sub channels are not per database: the prefix matters)
    timeout_s: float  # one open-time Redis call (lookups, fills, the replay guard)
    profile_ttl_s: float
    store_timeout_s: float = DEFAULT_STORE_TIMEOUT_S  # database_timeout_ms: bounds one store read

    @property
    def bulk_timeout_s(self) -> float:
        """The deadline of one background call (tombstones, publishes, the subscriber's commands)."""
        return self.timeout_s * BULK_FACTOR

    @property
    def tombstone_s(self) -> float:
        """How long a writer's tombstone lives: it must outlive any reader's store read plus its fill.

        A read may wait behind one in-flight read of the same batch (so two store deadlines), and the
        fill is one Redis call after the lookup's (two Redis deadlines)."""
        return max(TOMBSTONE_MIN_S, 2 * self.store_timeout_s + 2 * self.timeout_s)


def redis_config(settings: Settings) -> RedisConfig | None:
    """The shared tier's configuration, or None when ``redis_url`` is not set (one process, no Redis)."""
    if not settings.redis_url:
        return None
    return RedisConfig(
        settings.redis_url,
        settings.redis_key_prefix,
        settings.redis_timeout_ms / 1000,
        settings.redis_profile_ttl_seconds,
        settings.database_timeout_ms / 1000,
    )
