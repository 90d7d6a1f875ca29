"""Profile lookups (MGET) on the shared tier's own connections, against real ``redis-server`` processes:
a restart while a connection was idle costs no failed lookup, and a lookup cut off by its deadline
never leaves its late reply to be read as the answer to the next one."""

from __future__ import annotations

import asyncio

from app.shared.client import SharedRedis
from app.shared.config import RedisConfig
from tests.redis_tools import PrivateRedis, private_redis  # noqa: F401 (fixture)


def config(url: str, timeout_s: float = 0.5) -> RedisConfig:
    return RedisConfig(url, "lookups:", timeout_s=timeout_s, profile_ttl_s=60.0)


def test_lookups_answer_values_in_key_order(private_redis: PrivateRedis) -> None:  # noqa: F811
    private_redis.client().mset({"lookups:a": b"1", "lookups:c": b"\x00\r\n3"})

    async def run() -> list[bytes | None] | None:
        redis = SharedRedis(config(private_redis.url))
        try:
            return await redis.get_many(["lookups:a", "lookups:b", "lookups:c", "lookups:é"])
        finally:
            await redis.aclose()

    assert asyncio.run(run()) == [b"1", None, b"\x00\r\n3", None]


def test_a_restart_while_idle_costs_no_failed_lookup(private_redis: PrivateRedis) -> None:  # noqa: F811
    async def run() -> tuple[list[bytes | None] | None, list[bytes | None] | None, int]:
        redis = SharedRedis(config(private_redis.url))
        try:
            private_redis.client().set("lookups:a", b"before")
            before = await redis.get_many(["lookups:a"])
            private_redis.stop()  # the kept connection dies with the server
            private_redis.start()
            private_redis.client().set("lookups:a", b"after")
            after = await redis.get_many(["lookups:a"])
            return before, after, redis.errors["get"]
        finally:
            await redis.aclose()

    assert asyncio.run(run()) == ([b"before"], [b"after"], 0)


def test_a_lookup_past_its_deadline_leaves_no_reply_for_the_next(private_redis: PrivateRedis) -> None:  # noqa: F811
    private_redis.client().mset({"lookups:old": b"old", "lookups:new": b"new"})

    async def run() -> tuple[list[bytes | None] | None, list[bytes | None] | None, int]:
        redis = SharedRedis(config(private_redis.url, timeout_s=0.1))
        try:
            await redis.get_many(["lookups:new"])  # a connection is kept
            private_redis.pause()
            try:
                late = await redis.get_many(["lookups:old"])  # sent; its reply comes after the deadline
            finally:
                private_redis.resume()
            await asyncio.sleep(0.2)  # the reply to the abandoned MGET ("old") has arrived by now
            return late, await redis.get_many(["lookups:new"]), redis.errors["get"]
        finally:
            await redis.aclose()

    assert asyncio.run(run()) == (None, [b"new"], 1)
