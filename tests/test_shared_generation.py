"""A writer whose backlog overflowed tells every process to drop everything: the profile copies in
Redis must go too, or every node reads the old profiles back from Redis for a whole TTL."""

from __future__ import annotations

import asyncio
from pathlib import Path

import redis

from app.shared.client import SharedRedis
from app.shared.config import RedisConfig
from app.shared.invalidation import RedisInvalidation
from app.shared.keys import profile_key
from app.shared.tier import open_shared
from app.store import open_store
from app.store.base import Profile
from tests.tcp_proxy import TcpProxy
from tests.test_shared_profiles import fetch, settled


def config(url: str, prefix: str) -> RedisConfig:
    return RedisConfig(url, prefix, timeout_s=0.1, profile_ttl_s=600.0)


async def until(condition: object, seconds: float = 5.0) -> None:
    for _ in range(int(seconds / 0.01)):
        if callable(condition) and condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("timed out")


def test_an_overflowed_backlog_leaves_no_old_profile_in_redis(
    tmp_path: Path, shared_redis: tuple[str, str]
) -> None:
    url, prefix = shared_redis
    host, port = "127.0.0.1", int(url.rsplit(":", 1)[1].split("/")[0])
    proxy = TcpProxy(host, port).start()  # node A reaches Redis through it; node B directly

    async def scenario() -> None:
        nonlocal proxy
        store = open_store(f"sqlite:///{tmp_path / 'p.db'}")
        await store.open()
        b = open_shared(config(url, prefix), store.profiles, 300.0)
        resets: list[int] = []
        b.invalidation.on_reset(lambda: resets.append(1))
        b.invalidation.start()
        a_redis = SharedRedis(config(f"redis://{host}:{proxy.port}/0", prefix))
        a = RedisInvalidation(a_redis, backlog_max=10)  # stands for 100,000: a long outage, a big import
        try:
            await store.profiles.upsert_many([("r1", b'{"v":1}')])
            await until(lambda: b.invalidation.connected)
            old = await fetch(b.profiles, "r1")
            assert isinstance(old, Profile) and old.attributes == b'{"v":1}'
            await settled(b.profiles)
            assert b.profiles.stats.fills == 1  # node B's v1 is in Redis now
            proxy.stop()  # node A loses Redis (refused, so nothing it sends arrives later)
            await store.profiles.upsert_many([("r1", b'{"v":2}')])  # A's acknowledged change
            await a.recipients_changed(["r1", *(f"x{i}" for i in range(20))])
            assert a.backlog >= 10  # overflowed: A no longer knows whom to tombstone
            proxy = TcpProxy(host, port, port=proxy.port).start()
            assert await a.announce_backlog()
            await until(lambda: len(resets) == 2)  # B's subscription, then A's "drop everything"
            fresh = await fetch(b.profiles, "r1")  # a local miss: Redis, then the store
            assert isinstance(fresh, Profile) and fresh.attributes == b'{"v":2}'
            assert b.profiles.stats.hits == 0
            await settled(b.profiles)
            again = await fetch(b.profiles, "r1")  # filled in the new generation
            assert isinstance(again, Profile) and again.attributes == b'{"v":2}'
            assert b.profiles.stats.hits == 1
        finally:
            await b.aclose()
            await a_redis.aclose()
            await store.close()

    try:
        asyncio.run(scenario())
    finally:
        proxy.stop()
    client = redis.Redis.from_url(url)
    assert int(client.get(f"{prefix}gen") or 0) == 1
    assert client.get(profile_key(prefix, 0, "r1")) is not None  # the old copy, left to expire
    client.close()


def test_a_writer_tombstones_in_the_generation_redis_is_at(shared_redis: tuple[str, str]) -> None:
    """A writer that never subscribed (``opentime import``) starts at generation 0; its tombstones must
    still land where readers look."""
    url, prefix = shared_redis
    client = redis.Redis.from_url(url)
    client.set(f"{prefix}gen", 7)

    async def scenario() -> None:
        shared = SharedRedis(config(url, prefix))
        try:
            await RedisInvalidation(shared).recipients_changed(["r1"])
            assert shared.keys.generation == 7
        finally:
            await shared.aclose()

    asyncio.run(scenario())
    assert client.get(profile_key(prefix, 7, "r1")) == b"T"
    assert client.get(profile_key(prefix, 0, "r1")) is None
    client.close()
