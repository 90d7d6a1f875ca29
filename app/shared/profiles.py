"""Profiles in Redis, between a process's own caches and the store.

``SharedProfiles.fetch`` has the store's ``fetch`` form, so ``ProfileLoader`` takes it in the store's
place and the open-time path sees the same ``Profile`` records wherever they came from. It is asked
only on a local miss (the in-process caches answer hits without it). The lookups of one event-loop tick
go to Redis as one MGET; a profile found there is answered at once; a miss goes to the store, and the
store's answer fills Redis (one pipeline per tick of fills), with ``redis_profile_ttl_seconds``.

The stale-fill race, and why it cannot leave old data in Redis::

    reader: local miss, Redis miss ── reads v1 from the store ─────────────────── fills Redis with v1?
    writer:                                      commits v2 ── marks Redis ── announces

A plain DEL by the writer would let the reader's late fill put v1 back for a whole TTL. So the writer
*overwrites* the key with a tombstone (``RedisInvalidation``), and fills are SET NX: a fill that comes
after the tombstone finds the key taken and stores nothing. A reader that meets a tombstone treats it
as a miss, reads the store, and does not fill. The tombstone only has to outlive the gap between a
reader's store read and its fill, so its lifetime (``RedisConfig.tombstone_s``) is derived from the
deadlines that bound that gap: at least 10 s, and at least two store deadlines (``database_timeout_ms``:
a read may wait behind one in flight) plus two Redis deadlines. Once it expires, the next miss fills
Redis from the store, which by then holds v2.

A fill goes to the key its lookup used, of the generation current when the read began
(``app.shared.keys``): a read that began before a "drop everything" can only fill the old generation,
which nobody reads any more. After ``aclose`` a store read that finishes still answers its waiters but
fills nothing.
"""

from __future__ import annotations

import asyncio
import logging
import struct
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from functools import partial
from typing import Any, TypeVar

from app.shared.client import SharedRedis
from app.store.base import Profile, ProfileRepository, StoreError

logger = logging.getLogger(__name__)

T = TypeVar("T")
Callback = Callable[[Profile | StoreError | None], None]
Wanted = Callable[[], bool]  # whether anyone still waits for a lookup (passed on to the store)

HEADER = struct.Struct(">cqd")  # marker, version, updated_at; then the encoded attributes
PROFILE = b"P"
TOMBSTONE = b"T"


@dataclass(slots=True)
class TierStats:
    hits: int = 0
    misses: int = 0
    tombstones: int = 0  # lookups that met a writer's mark: read from the store, not filled
    unavailable: int = 0  # lookups that went straight to the store: Redis was down or did not answer
    fills: int = 0  # store reads written to Redis (SET NX: a tombstone or a newer fill wins)


def encode(profile: Profile) -> bytes:
    return HEADER.pack(PROFILE, profile.version, profile.updated_at) + profile.attributes


def decode(recipient: str, value: bytes) -> Profile | None:
    """The profile a value holds; None for a tombstone (or anything this version does not know)."""
    if len(value) < HEADER.size or value[:1] != PROFILE:
        return None
    _, version, updated_at = HEADER.unpack_from(value)
    return Profile(recipient, value[HEADER.size :], version, updated_at)


class SharedProfiles:
    """Redis, then the store: the ``fetch`` of ``ProfileRepository`` with Redis in front."""

    def __init__(self, redis: SharedRedis, store: ProfileRepository) -> None:
        self._redis = redis
        self._store = store
        self._keys = redis.keys
        self._ttl = redis.config.profile_ttl_s
        self._asked: dict[str, list[Callback]] = {}
        self._wanted: dict[str, list[Wanted]] = {}  # for the asked recipients whose lookups said
        self._fills: list[tuple[str, bytes]] = []
        self._tasks: set[asyncio.Task[Any]] = set()
        self._closed = False
        self.stats = TierStats()

    def fetch(self, recipient: str, callback: Callback, wanted: Wanted | None = None) -> None:
        if self._redis.open or self._closed:  # Redis failed lately: don't wait on it, and don't fill it
            self.stats.unavailable += 1
            self._store.fetch(recipient, callback, wanted)
            return
        if not self._asked:
            asyncio.get_running_loop().call_soon(self._ask)
        self._asked.setdefault(recipient, []).append(callback)
        if wanted is not None:
            self._wanted.setdefault(recipient, []).append(wanted)

    async def aclose(self) -> None:
        self._closed = True  # store reads still in flight answer, but fill nothing
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def _ask(self) -> None:
        asked, self._asked = self._asked, {}
        wanted, self._wanted = self._wanted, {}
        if self._closed:
            for recipient, callbacks in asked.items():
                self._store.fetch(
                    recipient, partial(_answer, callbacks), _wanted(callbacks, wanted, recipient)
                )
            return
        keys = [self._keys.key(recipient) for recipient in asked]
        self._track(self._redis.get_many(keys), partial(self._got, asked, wanted, keys))

    def _got(
        self,
        asked: dict[str, list[Callback]],
        wanted: dict[str, list[Wanted]],
        keys: list[str],
        task: asyncio.Task[list[bytes | None] | None],
    ) -> None:
        values = None if task.cancelled() else task.result()
        if values is None:  # no answer from Redis: the store answers, and Redis is not filled
            self.stats.unavailable += len(asked)
            for recipient, callbacks in asked.items():
                self._store.fetch(
                    recipient, partial(_answer, callbacks), _wanted(callbacks, wanted, recipient)
                )
            return
        for (recipient, callbacks), key, value in zip(asked.items(), keys, values, strict=True):
            if value is None:
                self.stats.misses += 1
                want = _wanted(callbacks, wanted, recipient)
                self._store.fetch(recipient, partial(self._read, callbacks, key), want)
                continue
            profile = decode(recipient, value)
            if profile is None:  # a writer's tombstone: read the store, don't fill
                self.stats.tombstones += 1
                self._store.fetch(
                    recipient, partial(_answer, callbacks), _wanted(callbacks, wanted, recipient)
                )
            else:
                self.stats.hits += 1
                _answer(callbacks, profile)

    def _read(self, callbacks: list[Callback], key: str, result: Profile | StoreError | None) -> None:
        _answer(callbacks, result)
        if isinstance(result, Profile) and not self._closed:
            if not self._fills:
                asyncio.get_running_loop().call_soon(self._fill)
            self._fills.append((key, encode(result)))

    def _fill(self) -> None:
        fills, self._fills = self._fills, []
        if self._closed:
            return
        self.stats.fills += len(fills)
        self._track(self._redis.add_many(fills, self._ttl), None)

    def _track(self, call: Coroutine[Any, Any, T], done: Callable[[asyncio.Task[T]], None] | None) -> None:
        task = asyncio.ensure_future(call)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        if done is not None:
            task.add_done_callback(done)


def _wanted(callbacks: list[Callback], wanted: dict[str, list[Wanted]], recipient: str) -> Wanted | None:
    """For the store: whether any of ``callbacks`` is still waited for (None: some lookup cannot say)."""
    checks = wanted.get(recipient, [])
    return partial(_any_wanted, checks) if len(checks) == len(callbacks) else None


def _any_wanted(checks: list[Wanted]) -> bool:
    return any(check() for check in checks)


def _answer(callbacks: list[Callback], result: Profile | StoreError | None) -> None:
    for callback in callbacks:
        try:
            callback(result)
        except Exception:
            # One broken waiter must not leave the others of this recipient waiting out their budget.
            logger.exception("a profile lookup callback failed")
