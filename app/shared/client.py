"""Every Redis call of a process: aiocache's ``RedisCache`` (and the redis.asyncio client it wraps).

Each call has a deadline (``redis_timeout_ms`` on the open-time path; ten times that for background and
bulk work such as tombstoning an import batch, which nobody waits on) and goes through a circuit breaker
(``app.upstream.breaker``): after a few failures in a row Redis is not asked at all for a moment, so an
outage costs the open-time path nothing but one refused ``allow()``; then one probe finds out whether
it is back. A failed or refused call answers ``None`` (or False) and is counted per operation: callers
fall back to their local data, they never see a Redis exception.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from functools import partial
from typing import Any, TypeVar
from urllib.parse import unquote, urlsplit

from aiocache import RedisCache
from aiocache.serializers import NullSerializer
from redis.asyncio.client import PubSub
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError, ResponseError

from app.log_throttle import ThrottledLog
from app.shared.config import RedisConfig
from app.shared.keys import ProfileKeys
from app.upstream.breaker import BreakerState, CircuitBreaker

logger = logging.getLogger(__name__)

T = TypeVar("T")

# Consecutive failures that open the breaker, and how long it stays open before one probe.
BREAKER_THRESHOLD = 3
BREAKER_RESET_S = 1.0
# SET NX PX for every key (ARGV[1] the TTL in ms, then one value per key): a fill never overwrites.
ADD_MANY = "for i = 1, #KEYS do redis.call('set', KEYS[i], ARGV[i + 1], 'NX', 'PX', ARGV[1]) end return 1"
# Tombstones, unless the generation changed (KEYS[1] the generation key, ARGV[1] the generation the keys
# were built with, ARGV[2] the TTL in ms, ARGV[3] the tombstone): answers the current generation.
MARK_MANY = """
local generation = redis.call('get', KEYS[1]) or '0'
if generation ~= ARGV[1] then return generation end
for i = 2, #KEYS do redis.call('set', KEYS[i], ARGV[3], 'PX', ARGV[2]) end
return generation
"""
# GCRA rate limit (``app.limits.rate``) on KEYS[1], on Redis's clock so every node counts alike: ARGV[1]
# the emission interval and ARGV[2] the burst, in whole microseconds. Answers {allowed (0/1), microseconds
# until one more request passes, microseconds until the bucket is full}; the key (the theoretical
# arrival time) lives as long as the bucket is not full.
GCRA = """
local clock = redis.call('time')
local now = tonumber(clock[1]) * 1000000 + tonumber(clock[2])
local interval = tonumber(ARGV[1])
local tat = tonumber(redis.call('get', KEYS[1]) or now)
if tat < now then tat = now end
local new_tat = tat + interval
local allow_at = new_tat - tonumber(ARGV[2]) * interval
if now < allow_at then return {0, allow_at - now, tat - now} end
redis.call('set', KEYS[1], string.format('%d', new_tat), 'PX', math.ceil((new_tat - now) / 1000) + 1)
return {1, 0, new_tat - now}
"""
# What Redis may answer with when it is not itself (a network error, a deadline, a refused command).
FAILURES = (RedisError, TimeoutError, OSError)


class SharedRedis:
    """One process's Redis connections, deadlines, breaker and error counters."""

    def __init__(self, config: RedisConfig) -> None:
        self.config = config
        self.prefix = config.prefix
        self._timeout = config.timeout_s
        self._bulk_timeout = config.bulk_timeout_s
        self.keys = ProfileKeys(config.prefix)  # lookups and writers of this process use one generation
        self.breaker = CircuitBreaker(BREAKER_THRESHOLD, BREAKER_RESET_S)
        self.errors: Counter[str] = Counter()  # failed calls by operation
        self.refused: Counter[str] = Counter()  # calls the open breaker did not let through
        self._warnings = ThrottledLog(logger, interval_s=30.0)
        self._cache: Any = _redis_cache(config)
        self._lookups = _Lookups(self._cache.client.connection_pool)
        # EVALSHA, loading the script again after a Redis restart (NOSCRIPT) by itself.
        self._add_script: Any = self._cache.client.register_script(ADD_MANY)
        self._mark_script: Any = self._cache.client.register_script(MARK_MANY)
        self._gcra_script: Any = self._cache.client.register_script(GCRA)

    @property
    def closed(self) -> bool:
        """The breaker lets calls through (Redis answered lately)."""
        return self.breaker.state is BreakerState.CLOSED

    @property
    def open(self) -> bool:
        """Redis failed lately: don't even try (a half-open breaker lets one probe try)."""
        return self.breaker.state is BreakerState.OPEN

    async def get_many(self, keys: Sequence[str]) -> list[bytes | None] | None:
        """The values of ``keys`` (None where absent), or None when Redis did not answer.

        One MGET on a connection of our own (``_Lookups``): it runs after every local miss, and the
        client's ``execute_command`` spends about 400,000 instructions per call (its pool's lock, the
        observability hooks of redis-py 8, the command's packing and parsing) against ~the tenth of
        that here; our deadline, breaker and error counts are in ``_call`` either way.
        """
        lookups = self._lookups
        return await self._call("get", lambda: lookups.mget(keys))

    async def add(self, key: str, value: bytes, ttl_s: float) -> bool | None:
        """SET NX with a TTL: True if stored, False if the key exists, None when Redis did not answer."""
        return await self._call("add", lambda: self._add(key, value, ttl_s))

    async def add_many(self, items: Sequence[tuple[str, bytes]], ttl_s: float) -> bool:
        """SET NX with a TTL for each item, in one round trip: one Lua script call, each SET on its own.

        One EVALSHA with all keys costs about a third of a pipeline of SETs on our side (measured at 20
        keys: 160 against 550 µs of CPU), and this runs for every cold open.
        """
        keys = [key for key, _ in items]
        args = [_ms(ttl_s), *(value for _, value in items)]
        return await self._call("add", lambda: self._add_script(keys=keys, args=args)) is not None

    async def mark_many(self, generation: int, keys: Sequence[str], value: bytes, ttl_s: float) -> int | None:
        """SET each of ``keys`` (built with ``generation``) to ``value`` with a TTL, overwriting, in one
        script call, unless Redis has moved to another generation: answers Redis's generation (the keys
        were written when it equals ``generation``), None when Redis did not answer. A bulk call."""
        call_keys = [self.keys.generation_key, *keys]
        args = [generation, _ms(ttl_s), value]
        answer = await self._call("mark", lambda: self._mark_script(keys=call_keys, args=args), bulk=True)
        return None if answer is None else int(answer)

    async def gcra(self, key: str, interval_us: int, burst: int) -> tuple[bool, int, int] | None:
        """One request against the rate limit kept at ``key`` (see ``GCRA``): allowed, microseconds until
        one more passes, microseconds until the bucket is full; None when Redis did not answer."""
        script = self._gcra_script
        answer = await self._call("ratelimit", lambda: script(keys=[key], args=[interval_us, burst]))
        if answer is None:
            return None
        allowed, retry_us, reset_us = answer
        return bool(allowed), int(retry_us), int(reset_us)

    async def generation(self) -> int | None:
        """The current generation of profile keys in Redis (None when Redis did not answer).

        Asked even when the breaker is open: the subscriber asks right after Redis confirmed its
        subscription, and the answer closes the breaker."""
        return await self._call("generation", self._generation, bulk=True, force=True)

    async def next_generation(self) -> int | None:
        """Move every process to a new generation of profile keys (INCR); None when Redis did not answer."""
        incr = self._cache.client.incr
        answer = await self._call("generation", lambda: incr(self.keys.generation_key), bulk=True)
        return None if answer is None else int(answer)

    async def put(self, key: str, value: bytes, ttl_s: float) -> bool:
        """SET with a TTL, overwriting (what a reader was last shown: ``app.decisions.clicks``)."""
        execute = self._cache.client.execute_command
        return await self._call("put", lambda: execute("SET", key, value, "PX", _ms(ttl_s))) is not None

    async def delete(self, key: str) -> bool:
        return await self._call("delete", lambda: self._cache.delete(key)) is not None

    async def publish(self, channel: str, message: bytes) -> bool:
        publish = self._cache.client.publish
        return await self._call("publish", lambda: publish(channel, message), bulk=True) is not None

    async def ping(self) -> bool:
        return await self._call("ping", lambda: self._cache.client.ping()) is not None

    def pubsub(self) -> PubSub:
        """A pub/sub connection of its own (the subscriber owns and closes it)."""
        pubsub: PubSub = self._cache.client.pubsub()
        return pubsub

    async def aclose(self) -> None:
        await self._lookups.aclose()
        await self._cache.client.aclose()

    def failed(self, op: str, exc: BaseException) -> None:
        """Count a failure of ``op`` seen outside ``_call`` (the subscriber's connection)."""
        self.errors[op] += 1
        self._warnings.warning(op, "redis %s failed: %r", op, exc)

    async def _generation(self) -> int:
        return int(await self._cache.client.get(self.keys.generation_key) or 0)  # absent: generation 0

    async def _add(self, key: str, value: bytes, ttl_s: float) -> bool:
        try:
            await self._cache.add(key, value, ttl=float(ttl_s))
        except ValueError:  # aiocache's word for "the key exists"
            return False
        return True

    async def _call(
        self, op: str, call: Callable[[], Awaitable[T]], *, bulk: bool = False, force: bool = False
    ) -> T | None:
        if not (force or self.breaker.allow()):
            self.refused[op] += 1
            return None
        try:
            async with asyncio.timeout(self._bulk_timeout if bulk else self._timeout):
                result = await call()
        except FAILURES as exc:
            self.breaker.record_failure()
            self.failed(op, exc)
            return None
        self.breaker.record_success()
        return result


class _Lookups:
    """MGET on connections of its own, of the client pool's kind and settings (address, credentials,
    TLS) except redis-py's socket timeout: with one, every send is an ``asyncio.wait_for`` (a Task) and
    every read a timeout context, and the caller's deadline (``SharedRedis._call``) bounds the whole
    MGET anyway.

    A connection is kept for the next MGET only after a complete answer; one that failed or was
    interrupted (the deadline) is dropped, redis-py has already closed it. A kept connection that
    turns out dead (Redis restarted while it was idle) is replaced once at once, as the pool would
    have noticed before sending. As many are kept as MGETs were ever in flight at once (one per
    event-loop tick of lookups, usually answered before the next tick).
    """

    def __init__(self, pool: Any) -> None:
        self._connection = partial(
            pool.connection_class, **{**pool.connection_kwargs, "socket_timeout": None}
        )
        self._idle: list[Any] = []

    async def mget(self, keys: Sequence[str]) -> list[bytes | None]:
        command = _mget_command(keys)
        if self._idle:
            try:
                return await self._ask(self._idle.pop(), command)
            except RedisConnectionError:
                pass  # the kept connection had died: one new one, like the pool's check
        return await self._ask(self._connection(), command)

    async def _ask(self, connection: Any, command: bytes) -> list[bytes | None]:
        await connection.send_packed_command(command, check_health=False)
        try:
            values: list[bytes | None] = await connection.read_response()
        except ResponseError:
            self._idle.append(connection)  # an error answer, read whole: the connection is fine
            raise
        self._idle.append(connection)
        return values

    async def aclose(self) -> None:
        idle, self._idle = self._idle, []
        for connection in idle:
            await connection.disconnect()


def _mget_command(keys: Sequence[str]) -> bytes:
    """MGET in the Redis protocol, as redis-py's ``pack_command`` builds it (str formatting, encoded
    once: ``bytes % ...`` per key cost more than the rest of the call)."""
    lines = [f"*{len(keys) + 1}\r\n$4\r\nMGET\r\n"]
    for key in keys:
        size = len(key) if key.isascii() else len(key.encode())
        lines.append(f"${size}\r\n{key}\r\n")
    return "".join(lines).encode()


def _redis_cache(config: RedisConfig) -> Any:
    parts = urlsplit(config.url)
    pool: dict[str, Any] = {
        # No retries inside redis-py: a call gets one deadline, and the breaker decides what comes next.
        "retry": Retry(NoBackoff(), 0),
        "username": unquote(parts.username) if parts.username else None,
    }
    return RedisCache(
        serializer=NullSerializer(encoding=None),  # values are bytes, kept as they are
        endpoint=parts.hostname,
        port=parts.port or 6379,
        db=int(parts.path.strip("/") or 0),
        password=unquote(parts.password) if parts.password else None,
        ssl=parts.scheme == "rediss",
        timeout=0,  # our own deadline (asyncio.timeout: no task per call), not aiocache's wait_for
        create_connection_timeout=config.timeout_s,
        connection_pool_kwargs=pool,
    )


def _ms(seconds: float) -> int:
    return max(int(seconds * 1000), 1)
