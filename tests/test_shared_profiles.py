"""The Redis profile tier with a real SQLite store and the machine's Redis: hit, miss, fill, tombstone,
and the stale-fill race that a plain DEL would lose."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import orjson
import redis

from app.shared.client import SharedRedis
from app.shared.config import RedisConfig
from app.shared.invalidation import RedisInvalidation
from app.shared.keys import profile_key
from app.shared.profiles import TOMBSTONE, SharedProfiles, encode
from app.store import open_store
from app.store.base import Profile, ProfileRepository, StoreError

Answer = Profile | StoreError | None


def config(url: str, prefix: str) -> RedisConfig:
    return RedisConfig(url, prefix, timeout_s=0.5, profile_ttl_s=60.0)


async def fetch(source: SharedProfiles, recipient: str) -> Answer:
    future: asyncio.Future[Answer] = asyncio.get_running_loop().create_future()
    source.fetch(recipient, future.set_result)
    return await future


async def settled(redis_tier: SharedProfiles) -> None:
    """Let the tier's fills (sent after the answer) reach Redis."""
    for _ in range(50):
        await asyncio.sleep(0.01)
        if not redis_tier._tasks:
            return


def test_miss_fills_redis_then_hits_without_the_store(tmp_path: Path, shared_redis: tuple[str, str]) -> None:
    url, prefix = shared_redis

    async def scenario() -> None:
        store = open_store(f"sqlite:///{tmp_path / 'p.db'}")
        await store.open()
        shared = SharedRedis(config(url, prefix))
        try:
            await store.profiles.upsert_many([("r1", b'{"name":"Ann"}')])
            tier = SharedProfiles(shared, store.profiles)
            first = await fetch(tier, "r1")
            assert isinstance(first, Profile) and first.attributes == b'{"name":"Ann"}'
            await settled(tier)
            assert (tier.stats.misses, tier.stats.fills) == (1, 1)
            reads = store.profiles.read_stats.keys
            again = await fetch(tier, "r1")
            assert again == first  # the same record, version and updated_at included
            assert tier.stats.hits == 1
            assert store.profiles.read_stats.keys == reads  # the store was not asked
            assert await fetch(tier, "nobody") is None  # unknown: the store's answer, nothing filled
            await settled(tier)
            assert tier.stats.fills == 1
        finally:
            await shared.aclose()
            await store.close()

    asyncio.run(scenario())
    client = redis.Redis.from_url(url)
    assert 0 < client.pttl(profile_key(prefix, 0, "r1")) <= 60_000
    assert client.get(profile_key(prefix, 0, "nobody")) is None
    client.close()


def test_a_writers_tombstone_is_a_miss_that_is_not_filled(
    tmp_path: Path, shared_redis: tuple[str, str]
) -> None:
    url, prefix = shared_redis

    async def scenario() -> None:
        store = open_store(f"sqlite:///{tmp_path / 'p.db'}")
        await store.open()
        shared = SharedRedis(config(url, prefix))
        try:
            await store.profiles.upsert_many([("r1", b'{"v":1}')])
            tier = SharedProfiles(shared, store.profiles)
            await fetch(tier, "r1")
            await settled(tier)
            await store.profiles.upsert_many([("r1", b'{"v":2}')])
            await RedisInvalidation(shared).recipients_changed(["r1"])
            answer = await fetch(tier, "r1")
            assert isinstance(answer, Profile) and answer.attributes == b'{"v":2}'
            await settled(tier)
            assert (tier.stats.tombstones, tier.stats.fills) == (1, 1)
        finally:
            await shared.aclose()
            await store.close()

    asyncio.run(scenario())
    client = redis.Redis.from_url(url)
    assert client.get(profile_key(prefix, 0, "r1")) == TOMBSTONE
    assert 0 < client.pttl(profile_key(prefix, 0, "r1")) <= config(url, prefix).tombstone_s * 1000
    client.close()


class HeldStore:
    """The real store, whose answers are held until ``release``: a reader that read just before a
    writer committed, and fills Redis only after the writer's invalidation."""

    def __init__(self, store: ProfileRepository) -> None:
        self._store = store
        self.released = asyncio.Event()
        self.read = asyncio.Event()
        self._waiting: set[asyncio.Task[None]] = set()

    def fetch(
        self, recipient: str, callback: Callable[[Answer], None], wanted: Callable[[], bool] | None = None
    ) -> None:
        def hold(result: Answer) -> None:
            self.read.set()
            task = asyncio.ensure_future(self._later(callback, result))
            self._waiting.add(task)
            task.add_done_callback(self._waiting.discard)

        self._store.fetch(recipient, hold, wanted)

    async def _later(self, callback: Callable[[Answer], None], result: Answer) -> None:
        await self.released.wait()
        callback(result)


def test_a_reader_that_read_before_the_commit_cannot_fill_redis_with_the_old_row(
    tmp_path: Path, shared_redis: tuple[str, str]
) -> None:
    url, prefix = shared_redis

    async def scenario() -> None:
        store = open_store(f"sqlite:///{tmp_path / 'p.db'}")
        await store.open()
        shared = SharedRedis(config(url, prefix))
        try:
            await store.profiles.upsert_many([("r1", b'{"v":1}')])
            held = HeldStore(store.profiles)
            reader = SharedProfiles(shared, held)  # type: ignore[arg-type]  (fetch is all it uses)
            late = asyncio.ensure_future(fetch(reader, "r1"))
            await held.read.wait()  # the reader has v1 in hand
            await store.profiles.upsert_many([("r1", b'{"v":2}')])  # the writer commits v2 ...
            await RedisInvalidation(shared).recipients_changed(["r1"])  # ... and invalidates
            held.released.set()
            old = await late
            assert isinstance(old, Profile) and old.attributes == b'{"v":1}'  # read before the commit
            await settled(reader)
            assert reader.stats.fills == 1  # it tried to fill ...
            fresh = SharedProfiles(shared, store.profiles)
            answer = await fetch(fresh, "r1")  # ... but the next reader anywhere sees v2
            assert isinstance(answer, Profile) and answer.attributes == b'{"v":2}'
            assert fresh.stats.tombstones == 1
        finally:
            await shared.aclose()
            await store.close()

    asyncio.run(scenario())
    client = redis.Redis.from_url(url)
    assert client.get(profile_key(prefix, 0, "r1")) == TOMBSTONE  # not the old row
    client.close()


def test_values_this_version_cannot_read_are_misses(tmp_path: Path, shared_redis: tuple[str, str]) -> None:
    url, prefix = shared_redis
    client = redis.Redis.from_url(url)
    client.set(profile_key(prefix, 0, "r1"), b"X-from-a-future-version", px=60_000)
    client.close()

    async def scenario() -> None:
        store = open_store(f"sqlite:///{tmp_path / 'p.db'}")
        await store.open()
        shared = SharedRedis(config(url, prefix))
        try:
            await store.profiles.upsert_many([("r1", orjson.dumps({"v": 1}))])
            answer = await fetch(SharedProfiles(shared, store.profiles), "r1")
            assert isinstance(answer, Profile) and answer.attributes == b'{"v":1}'
            assert encode(answer)[:1] == b"P"
        finally:
            await shared.aclose()
            await store.close()

    asyncio.run(scenario())
