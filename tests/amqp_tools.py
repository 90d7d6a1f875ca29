"""The machine's RabbitMQ for tests: queues of a test's own (unique names, deleted afterwards), and
small synchronous publish/read helpers. A test skips when RabbitMQ does not answer, except under CI=true
(CI starts it: tools/start-services.sh)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from typing import Any

import aio_pika
import orjson
import pytest

from tests.redis_tools import unavailable

BROKER_URL = "amqp://guest:guest@127.0.0.1:5672/"


def url_via(port: int) -> str:
    return f"amqp://guest:guest@127.0.0.1:{port}/"


async def _answers() -> bool:
    try:
        connection = await aio_pika.connect(BROKER_URL, timeout=2)
    except Exception:
        return False
    await connection.close()
    return True


@pytest.fixture
def queue_name() -> Iterator[str]:
    """A queue name of this test's own; it and its ``.dead`` queue are deleted afterwards."""
    if not asyncio.run(_answers()):
        unavailable(f"RabbitMQ does not answer at {BROKER_URL}")
    name = f"test.opentime.{uuid.uuid4().hex[:12]}"
    yield name
    asyncio.run(_delete(name, name + ".dead"))


async def _delete(*names: str) -> None:
    async with await aio_pika.connect(BROKER_URL) as connection:
        for name in names:
            channel = await connection.channel()
            await channel.queue_delete(name)


def publish(queue: str, bodies: list[bytes | Any]) -> None:
    """Publish each body (bytes as is, anything else as JSON), persistent, with publisher confirms."""
    asyncio.run(_publish(queue, bodies))


async def _publish(queue: str, bodies: list[bytes | Any]) -> None:
    async with await aio_pika.connect(BROKER_URL) as connection:
        channel = await connection.channel(publisher_confirms=True)
        await channel.declare_queue(queue, durable=True)
        for body in bodies:
            raw = body if isinstance(body, bytes) else orjson.dumps(body)
            message = aio_pika.Message(raw, delivery_mode=aio_pika.DeliveryMode.PERSISTENT)
            await channel.default_exchange.publish(message, routing_key=queue)


def take_all(queue: str) -> list[tuple[bytes, dict[str, Any]]]:
    """Every message now ready in ``queue`` (body, headers), acked: gone from the queue."""
    return asyncio.run(_take_all(queue))


async def _take_all(queue: str) -> list[tuple[bytes, dict[str, Any]]]:
    taken = []
    async with await aio_pika.connect(BROKER_URL) as connection:
        channel = await connection.channel()
        declared = await channel.declare_queue(queue, durable=True)
        while (message := await declared.get(fail=False)) is not None:
            taken.append((message.body, dict(message.headers or {})))
            await message.ack()
    return taken


def counts(queue: str) -> tuple[int, int]:
    """(ready messages, consumers) of ``queue``."""
    return asyncio.run(_counts(queue))


async def _counts(queue: str) -> tuple[int, int]:
    async with await aio_pika.connect(BROKER_URL) as connection:
        channel = await connection.channel()
        declared = await channel.declare_queue(queue, durable=True)
        result = declared.declaration_result
        return int(result.message_count or 0), int(result.consumer_count or 0)
