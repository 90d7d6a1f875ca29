"""The shared tier's settings, apart from the code that imports ``redis`` and ``aiocache``.

A process without ``redis_url`` reads this module and nothing else of ``app.shared``: those libraries
(with hiredis) are imported only where Redis is configured, so a one-process server does not carry
them (they add several MB of RSS and start-up time).
"""

from __future__ import annotations

from dataclasses import dataclass

from app.config import Settings


@dataclass(frozen=True, slots=True)
class RedisConfig:
    url: str
    prefix: str  # of every key and channel (pub/sub channels are not per database: the prefix matters)
    timeout_s: float
    profile_ttl_s: float


def redis_config(settings: Settings) -> RedisConfig | None:
    """The shared tier's configuration, or None when ``redis_url`` is not set (one process, no Redis)."""
    if not settings.redis_url:
        return None
    return RedisConfig(
        settings.redis_url,
        settings.redis_key_prefix,
        settings.redis_timeout_ms / 1000,
        settings.redis_profile_ttl_seconds,
    )
