"""Changes made while Redis is away are announced once it is back (tombstones and messages)."""

from __future__ import annotations

import asyncio

from app.shared.client import SharedRedis
from app.shared.config import RedisConfig
from app.shared.invalidation import RedisInvalidation
from app.shared.keys import profile_key
from app.shared.profiles import TOMBSTONE
from tests.redis_tools import PrivateRedis


def test_changes_made_during_an_outage_are_announced_when_redis_answers_again(
    private_redis: PrivateRedis,
) -> None:
    config = RedisConfig(private_redis.url, "backlog:", timeout_s=0.2, profile_ttl_s=60.0)
    heard: list[frozenset[str]] = []

    async def scenario() -> None:
        writer, reader = SharedRedis(config), SharedRedis(config)
        announcing, listening = RedisInvalidation(writer), RedisInvalidation(reader)
        listening.subscribe(heard.append)
        own: list[frozenset[str]] = []
        announcing.subscribe(own.append)
        listening.start()
        try:
            private_redis.stop()
            await announcing.recipients_changed(["r1", "r2"])
            assert own == [frozenset({"r1", "r2"})]  # the writer's own caches, at once
            assert announcing.backlog == 2
            await asyncio.to_thread(private_redis.start)
            for _ in range(500):  # the listener resubscribes (and drops its caches)
                if listening.connected:
                    break
                await asyncio.sleep(0.01)
            for _ in range(300):  # the breaker lets a probe through after its reset time
                if await announcing.announce_backlog():
                    break
                await asyncio.sleep(0.01)
            assert announcing.backlog == 0
            for _ in range(100):
                if heard:
                    break
                await asyncio.sleep(0.01)
        finally:
            await listening.aclose()
            await writer.aclose()
            await reader.aclose()

    asyncio.run(scenario())
    assert heard == [frozenset({"r1", "r2"})]
    client = private_redis.client()
    assert client.get(profile_key("backlog:", 0, "r1")) == TOMBSTONE
    client.close()
