"""RabbitMQ (AMQP 0-9-1) as an ``EventSource``: the only module that imports aio-pika.

Consumes one durable queue with a bounded prefetch and manual acks. Poison messages go to the durable
queue ``<queue>.dead`` (declared here), published with the reason in the ``x-opentime-reason`` header
and publisher confirms, and only then acked: a crash in between leaves a copy in both, never in none.
Broker errors are translated here: a lost connection is logged and retried with capped exponential
backoff and jitter; acks that fall on a lost channel are dropped (the broker redelivers the message).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import AsyncIterator, Awaitable

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractConnection, AbstractIncomingMessage
from aio_pika.exceptions import AMQPError, ChannelInvalidStateError

from app.errors import OpentimeError

logger = logging.getLogger(__name__)

REASON_HEADER = "x-opentime-reason"
DEAD_SUFFIX = ".dead"
FIRST_BACKOFF_S = 0.5
MAX_BACKOFF_S = 30.0
_LOST = (AMQPError, ChannelInvalidStateError, OSError, asyncio.TimeoutError)


def quiet_client_logs() -> None:
    """aiormq logs every failed connection attempt; ``deliveries()`` says it once per outage."""
    logging.getLogger("aiormq").setLevel(logging.CRITICAL)


class SourceError(OpentimeError):
    """The message source is misconfigured (not an outage: those are retried)."""


class AmqpDelivery:
    def __init__(self, message: AbstractIncomingMessage, channel: AbstractChannel, dead_queue: str) -> None:
        self._message = message
        self._channel = channel
        self._dead_queue = dead_queue

    @property
    def body(self) -> bytes:
        return self._message.body

    async def ack(self) -> None:
        await self._settle(self._message.ack())

    async def retry(self) -> None:
        await self._settle(self._message.nack(requeue=True))

    async def dead_letter(self, reason: str) -> None:
        headers = dict(self._message.headers or {})
        headers[REASON_HEADER] = reason[:1000]
        parked = aio_pika.Message(
            self._message.body,
            headers=headers,
            content_type=self._message.content_type,
            message_id=self._message.message_id,
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        )
        try:
            await self._channel.default_exchange.publish(parked, routing_key=self._dead_queue)
        except _LOST:
            logger.warning("could not park a poison message: it will be delivered again", exc_info=True)
            return
        await self.ack()

    async def _settle(self, settling: Awaitable[None]) -> None:
        try:
            await settling
        except _LOST:
            # The channel it came on is gone: the broker delivers the message again.
            logger.info("message not settled (connection lost): it will be delivered again")


class AmqpSource:
    """Consumes ``queue`` at ``url`` (``amqp://user:password@host:port/vhost``)."""

    def __init__(self, url: str, queue: str, *, prefetch: int = 100) -> None:
        if not url.startswith(("amqp://", "amqps://")):
            raise SourceError(f"--from must be an amqp:// or amqps:// URL, got {url.split('@')[-1]!r}")
        self._url = url
        self._queue = queue
        self._prefetch = prefetch
        self._closed = asyncio.Event()
        self._connection: AbstractConnection | None = None
        self._backoff = FIRST_BACKOFF_S
        self._consuming = False
        self._connects = 0

    @property
    def connected(self) -> bool:
        return self._consuming

    @property
    def connects(self) -> int:
        return self._connects

    @property
    def prefetch(self) -> int:
        return self._prefetch

    @property
    def dead_queue(self) -> str:
        return self._queue + DEAD_SUFFIX

    async def deliveries(self) -> AsyncIterator[AmqpDelivery]:
        while not self._closed.is_set():
            try:
                async for delivery in self._consume():
                    yield delivery
            except _LOST as exc:
                logger.warning("broker connection lost (%r): reconnecting in %.1f s", exc, self._backoff)
            await self._disconnect()
            if self._closed.is_set():
                return
            await self._sleep(self._backoff * random.uniform(0.5, 1.0))  # noqa: S311 - jitter, not security
            self._backoff = min(self._backoff * 2, MAX_BACKOFF_S)

    async def _consume(self) -> AsyncIterator[AmqpDelivery]:
        self._connection = await aio_pika.connect(self._url, timeout=10)
        channel = await self._connection.channel(publisher_confirms=True)
        await channel.set_qos(prefetch_count=self._prefetch)
        queue = await channel.declare_queue(self._queue, durable=True)
        await channel.declare_queue(self.dead_queue, durable=True)
        self._connects += 1
        self._consuming = True
        self._backoff = FIRST_BACKOFF_S  # connected: the next outage starts from a short wait again
        logger.info("consuming %s (prefetch %d)", self._queue, self._prefetch)
        async with queue.iterator() as messages:
            async for message in messages:
                if self._closed.is_set():
                    return  # not settled: redelivered after the connection closes
                yield AmqpDelivery(message, channel, self.dead_queue)
        if not self._closed.is_set():
            raise ConnectionError("the broker closed the channel")

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._closed.wait(), seconds)

    async def _disconnect(self) -> None:
        self._consuming = False
        connection, self._connection = self._connection, None
        if connection is not None:
            with contextlib.suppress(*_LOST):
                await connection.close()

    async def close(self) -> None:
        self._closed.set()
        await self._disconnect()
