"""Writers' tombstones: an import batch's worth in short calls with a bulk deadline, a lifetime that
outlives a store read, a backlog that is retried during an import and at shutdown, and no fill after
the tier is closed."""

from __future__ import annotations

import asyncio
from pathlib import Path

import redis

from app.cli.import_profiles import shared_config
from app.shared.client import SharedRedis
from app.shared.config import RedisConfig
from app.shared.invalidation import RedisInvalidation
from app.shared.keys import profile_key
from app.shared.profiles import TOMBSTONE, SharedProfiles
from app.shared.tier import announcer, open_shared
from app.store import open_store
from app.store.base import Profile
from tests.redis_tools import PrivateRedis
from tests.tcp_proxy import TcpProxy
from tests.test_shared_profiles import HeldStore, fetch, settled


def config(url: str, prefix: str, **more: float) -> RedisConfig:
    return RedisConfig(url, prefix, timeout_s=0.05, profile_ttl_s=600.0, **more)


def proxy_port(url: str) -> int:
    return int(url.rsplit(":", 1)[1].split("/")[0])


def test_an_import_batch_is_tombstoned_in_short_script_calls(private_redis: PrivateRedis) -> None:
    # One MULTI of MSET + 5,000 PEXPIREs ran past the 50 ms deadline about one time in three; then
    # the other nodes kept serving the old profiles for the whole import.
    recipients = [f"u{i}" for i in range(5000)]

    async def scenario() -> None:
        shared = SharedRedis(config(private_redis.url, "t:"))
        writer = RedisInvalidation(shared)
        try:
            for _ in range(3):
                await writer.recipients_changed(recipients)
                assert writer.backlog == 0 and not shared.errors
        finally:
            await shared.aclose()

    client = private_redis.client()
    client.config_resetstat()
    asyncio.run(scenario())
    stats = client.info("commandstats")
    assert "cmdstat_pexpire" not in stats and "cmdstat_mset" not in stats
    assert 30 <= stats["cmdstat_evalsha"]["calls"] <= 31  # 10 calls of 500 per batch (+1 NOSCRIPT)
    keys = [profile_key("t:", 0, recipient) for recipient in recipients]
    assert set(client.mget(keys)) == {TOMBSTONE}
    assert min(client.pttl(key) for key in keys[::500]) > 9000
    client.close()


def test_announcements_get_the_bulk_deadline_not_the_lookup_deadline(shared_redis: tuple[str, str]) -> None:
    url, prefix = shared_redis
    proxy = TcpProxy("127.0.0.1", proxy_port(url)).start()

    async def scenario() -> None:
        shared = SharedRedis(config(f"redis://127.0.0.1:{proxy.port}/0", prefix))
        writer = RedisInvalidation(shared)
        try:
            assert await shared.ping()  # connected
            proxy.pause()  # Redis is slow for 150 ms: three lookup deadlines, under one bulk deadline
            asyncio.get_running_loop().call_later(0.15, proxy.resume)
            await writer.recipients_changed(["r1"])
            assert writer.backlog == 0 and not shared.errors
        finally:
            await shared.aclose()

    try:
        asyncio.run(scenario())
    finally:
        proxy.stop()


def test_tombstones_outlive_a_store_read_at_the_configured_store_deadline(
    shared_redis: tuple[str, str], tmp_path: Path
) -> None:
    url, prefix = shared_redis
    slow_store = config(url, prefix, store_timeout_s=30.0)
    assert slow_store.tombstone_s >= 60.0  # a read may wait behind another; then a fill
    assert config(url, prefix, store_timeout_s=1.0).tombstone_s == 10.0  # never under 10 s

    async def scenario() -> None:
        shared = SharedRedis(slow_store)
        try:
            await RedisInvalidation(shared).recipients_changed(["r1"])
        finally:
            await shared.aclose()

    asyncio.run(scenario())
    client = redis.Redis.from_url(url)
    assert client.pttl(profile_key(prefix, 0, "r1")) > 59_000
    client.close()
    # opentime import builds its tombstones from the servers' store deadline too
    file = tmp_path / "opentime.toml"
    file.write_text(f'redis_url = "{url}"\ndatabase_timeout_ms = 30000\n')
    imported = shared_config(file)
    assert imported is not None and imported.tombstone_s == slow_store.tombstone_s


def test_an_import_announces_its_backlog_as_soon_as_redis_answers(shared_redis: tuple[str, str]) -> None:
    url, prefix = shared_redis
    proxy = TcpProxy("127.0.0.1", proxy_port(url)).start()
    port = proxy.port

    async def scenario() -> None:
        nonlocal proxy
        async with announcer(config(f"redis://127.0.0.1:{port}/0", prefix)) as writer:
            proxy.stop()
            await writer.recipients_changed(["first-batch"])  # Redis refused: kept
            assert writer.backlog == 1
            proxy = TcpProxy("127.0.0.1", proxy_port(url), port=port).start()
            await writer.recipients_changed(["second-batch"])  # answered: the backlog goes too
            assert writer.backlog == 0

    try:
        asyncio.run(scenario())
    finally:
        proxy.stop()
    client = redis.Redis.from_url(url)
    assert client.get(profile_key(prefix, 0, "first-batch")) == TOMBSTONE
    client.close()


def test_a_server_shutting_down_announces_its_backlog(shared_redis: tuple[str, str], tmp_path: Path) -> None:
    url, prefix = shared_redis
    proxy = TcpProxy("127.0.0.1", proxy_port(url)).start()
    port = proxy.port

    async def scenario() -> None:
        nonlocal proxy
        store = open_store(f"sqlite:///{tmp_path / 'p.db'}")
        await store.open()
        tier = open_shared(config(f"redis://127.0.0.1:{port}/0", prefix), store.profiles, 300.0)
        try:
            proxy.stop()
            await tier.invalidation.recipients_changed(["r1"])
            assert tier.invalidation.backlog == 1
            proxy = TcpProxy("127.0.0.1", proxy_port(url), port=port).start()
        finally:
            await tier.aclose()
            await store.close()
        assert tier.invalidation.backlog == 0

    try:
        asyncio.run(scenario())
    finally:
        proxy.stop()
    client = redis.Redis.from_url(url)
    assert client.get(profile_key(prefix, 0, "r1")) == TOMBSTONE
    client.close()


def test_a_store_read_that_ends_after_close_fills_nothing(
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
            tier = SharedProfiles(shared, held)  # type: ignore[arg-type]  (fetch is all it uses)
            late = asyncio.ensure_future(fetch(tier, "r1"))
            await held.read.wait()
            await tier.aclose()  # the lifespan ends while the read is in flight
            held.released.set()
            answer = await late  # the waiter still gets its answer ...
            assert isinstance(answer, Profile) and answer.attributes == b'{"v":1}'
            await settled(tier)
            await asyncio.sleep(0.05)
            assert tier.stats.fills == 0  # ... but the closed client is not used again
        finally:
            await shared.aclose()
            await store.close()

    asyncio.run(scenario())
    client = redis.Redis.from_url(url)
    assert client.get(profile_key(prefix, 0, "r1")) is None
    client.close()
