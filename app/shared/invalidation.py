"""Invalidation through Redis: a change made on one node empties the caches of every node.

``recipients_changed`` (a writer, after its commit) does three things, in this order:

1. tombstones the recipients' profiles in Redis (``app.shared.profiles``: no reader can fill the old
   row back), before anything local is dropped, so a local miss that follows cannot read the old
   profile from Redis. One Lua call per ``MARK_CHUNK`` keys (SET PX each), with the bulk deadline
   (``RedisConfig.bulk_timeout_s``): an import batch of 5,000 is ten short calls, not one long MULTI;
2. calls this process's listeners directly (so the writer's own node is up to date before the writer
   answers, and hears its change once: its own message is recognised by origin and skipped);
3. publishes the ids on ``<prefix>invalidate``; every other process's subscriber calls its listeners.

When Redis does not answer, steps 1 and 3 are kept in a bounded backlog and done again once it answers
(then the other nodes hear of the change late, not never): by the subscriber, by a writer without one
(``opentime import``, after each batch) and, within ``SHUTDOWN_S``, by ``aclose``. Past ``BACKLOG_MAX``
recipients the backlog no longer says whose tombstones are missing, so the writer moves every process
to a new generation of profile keys (INCR ``<prefix>gen``, ``app.shared.keys``) and publishes
"drop everything" with it: the old profile copies in Redis are never read again, and every process
drops its local caches. The subscriber reconnects by itself, with
backoff; it pings Redis every ``PING_S`` and treats a silent connection as lost. While it is
disconnected this process may miss messages, so the local caches keep serving (answers stay fast, and
the store is not flooded while Redis is away) but every (re)subscription first drops all of them
(``on_reset`` hooks): what was cached while deaf is at most one outage plus one cache TTL old, and
never older than that once Redis is back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from itertools import islice
from typing import Any

import orjson
from redis.asyncio.client import PubSub

from app.content.invalidation import Listener, LocalInvalidation
from app.shared.client import FAILURES, SharedRedis
from app.shared.keys import profile_key
from app.shared.profiles import TOMBSTONE

logger = logging.getLogger(__name__)

PING_S = 1.0  # the subscriber pings this often; three intervals of silence and it reconnects
RETRY_MIN_S, RETRY_MAX_S = 0.05, 2.0  # reconnect backoff
# Recipients whose announcement failed, kept to announce again; beyond this, every node is told to
# drop everything instead.
BACKLOG_MAX = 100_000
MESSAGE_MAX = 1000  # recipients per published message
MARK_CHUNK = 500  # tombstones per Redis call
SHUTDOWN_S = 2.0  # what aclose may spend announcing the backlog


@dataclass(slots=True)
class FanoutStats:
    published: int = 0  # messages sent
    received: int = 0  # messages from other processes acted on
    resets: int = 0  # times every local cache was dropped (re-subscribed, or told to by a writer)


class RedisInvalidation:
    """The ``Invalidation`` seam over Redis pub/sub; ``start()`` runs the subscriber (servers only)."""

    def __init__(self, redis: SharedRedis, *, backlog_max: int = BACKLOG_MAX, drains: bool = False) -> None:
        """``drains``: announce the backlog after each change that reached Redis (a writer with no
        subscriber to do it, such as ``opentime import``)."""
        self._redis = redis
        self._keys = redis.keys
        self._backlog_max = backlog_max
        self._drains = drains
        self._local = LocalInvalidation()
        self._resets: list[Callable[[], None]] = []
        self._origin = os.urandom(8).hex()
        self._channel = f"{redis.prefix}invalidate"
        self._backlog: set[str] = set()
        self._overflowed = False
        self._task: asyncio.Task[None] | None = None
        self._deaf = True  # not subscribed since start-up or since the connection was lost
        self.connected = False
        self.stats = FanoutStats()

    def subscribe(self, listener: Listener) -> None:
        self._local.subscribe(listener)

    def on_reset(self, hook: Callable[[], None]) -> None:
        """Call ``hook`` when every local cache must go (messages may have been missed)."""
        self._resets.append(hook)

    async def recipients_changed(self, recipients: Iterable[str]) -> None:
        changed = frozenset(recipients)
        if not changed:
            return
        marked = await self._mark(changed)
        self._local.tell(changed)
        if not (marked and await self._publish({"r": sorted(changed)})):
            self._keep(changed)
        elif self._drains and self.backlog:
            await self.announce_backlog()

    @property
    def backlog(self) -> int:
        """Recipients changed here whose announcement waits for Redis."""
        return len(self._backlog) + (self._backlog_max if self._overflowed else 0)

    async def announce_backlog(self) -> bool:
        """Announce what could not be announced before; True when nothing is left."""
        if self._overflowed:
            # Changes committed before this INCR are all covered: readers of the new generation read
            # the store, and fills of reads begun before it go to the old generation.
            generation = await self._redis.next_generation()
            if generation is None:
                return False
            self._keys.generation = generation
            if not await self._publish({"all": True, "g": generation}):
                return False
            self._overflowed = False
            self._backlog.clear()
        while self._backlog:
            chunk = frozenset(islice(self._backlog, MESSAGE_MAX))
            if not (await self._mark(chunk) and await self._publish({"r": sorted(chunk)})):
                return False
            self._backlog -= chunk
        return True

    def start(self) -> None:
        self._task = asyncio.create_task(self._listen(), name="opentime-redis-subscriber")

    async def aclose(self) -> None:
        """Stop the subscriber, then try (for at most ``SHUTDOWN_S``) to announce the backlog."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self.backlog:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(SHUTDOWN_S):
                    await self.announce_backlog()

    async def _mark(self, changed: frozenset[str]) -> bool:
        recipients = iter(changed)
        while chunk := list(islice(recipients, MARK_CHUNK)):
            if not await self._mark_chunk(chunk):
                return False
        return True

    async def _mark_chunk(self, recipients: list[str]) -> bool:
        for _ in range(3):  # a generation changed under us: write the tombstones in the current one
            generation = self._keys.generation
            keys = [profile_key(self._keys.prefix, generation, recipient) for recipient in recipients]
            current = await self._redis.mark_many(generation, keys, TOMBSTONE, self._redis.config.tombstone_s)
            if current is None:
                return False
            if current == generation:
                return True
            self._keys.generation = current
        return False

    async def _publish(self, message: dict[str, Any]) -> bool:
        recipients = message.get("r")
        if recipients is not None and len(recipients) > MESSAGE_MAX:
            chunks = [recipients[i : i + MESSAGE_MAX] for i in range(0, len(recipients), MESSAGE_MAX)]
            return all([await self._publish({"r": chunk}) for chunk in chunks])
        sent = await self._redis.publish(self._channel, orjson.dumps({"o": self._origin, **message}))
        self.stats.published += sent
        return sent

    def _keep(self, changed: frozenset[str]) -> None:
        self._backlog |= changed
        if len(self._backlog) > self._backlog_max:
            self._overflowed = True
            self._backlog.clear()

    async def _listen(self) -> None:
        delay = RETRY_MIN_S
        while True:
            pubsub = self._redis.pubsub()
            try:
                await self._session(pubsub)
            except FAILURES as exc:
                self._redis.failed("subscribe", exc)
                if not self._deaf:
                    delay = RETRY_MIN_S  # it was working: retry soon
            except Exception:
                logger.exception("the invalidation subscriber failed; it starts again")
            finally:
                self.connected = False
                self._deaf = True
                with contextlib.suppress(*FAILURES):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]
            await asyncio.sleep(delay)
            delay = min(delay * 2, RETRY_MAX_S)

    async def _session(self, pubsub: PubSub) -> None:
        bulk = self._redis.config.bulk_timeout_s  # the pub/sub connection's own calls get deadlines too
        async with asyncio.timeout(max(bulk, 1.0)):
            await pubsub.subscribe(self._channel)
            if await pubsub.get_message(timeout=PING_S) is None:
                raise TimeoutError("no subscription confirmation")
        # Read after subscribing: a later "drop everything" is heard with its generation. The answer
        # also closes a breaker left open by the outage.
        generation = await self._redis.generation()
        if generation is None:
            raise TimeoutError("redis did not say the generation of profile keys")
        self._keys.generation = generation
        self.connected = True
        if self._deaf:
            self._reset()
            self._deaf = False
        loop = asyncio.get_running_loop()
        heard = pinged = loop.time()
        while True:
            if self.backlog and not self._redis.open:
                await self.announce_backlog()
            async with asyncio.timeout(PING_S + bulk):
                message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=PING_S)
            now = loop.time()
            if message is not None:
                heard = now
                if message["type"] == "message":
                    self._heard(message["data"])
            if now - heard > 3 * PING_S:
                raise TimeoutError("redis stopped answering the subscriber's pings")
            if now - pinged >= PING_S:
                async with asyncio.timeout(bulk):
                    await pubsub.ping()
                pinged = now

    def _heard(self, data: bytes) -> None:
        try:
            message = orjson.loads(data)
            if message["o"] == self._origin:
                return  # this process's own change: its listeners heard it when it was made
            self.stats.received += 1
            if message.get("all"):
                # max: a writer may already have moved this process on (a tombstone call answered a newer one)
                self._keys.generation = max(self._keys.generation, int(message.get("g", 0)))
                self._reset()
            else:
                self._local.tell(frozenset(str(recipient) for recipient in message["r"]))
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            logger.error("ignored an invalidation message this version cannot read")

    def _reset(self) -> None:
        self.stats.resets += 1
        for hook in self._resets:
            try:
                hook()
            except Exception:
                logger.exception("dropping a local cache failed")
