"""Benchmark stream ingest (RabbitMQ, setting ``ingest_url``) side by side with signed webhooks, against
one real ``opentime serve`` per store that takes both.

    python3 -m bench.ingest                   # SQLite, ~1.5 min
    python3 -m bench.ingest --quick           # smoke check, ~30 s
    python3 -m bench.ingest --database-url postgresql://root@127.0.0.1:5432/test   # SQLite, then PostgreSQL

What it needs: the project's dependencies (aio-pika, asyncpg, httpx: ``pip install -e .`` in the main
checkout); RabbitMQ at ``--broker`` (default amqp://guest:guest@127.0.0.1:5672/; Debian:
``apt-get install rabbitmq-server``, or ``tools/start-services.sh``); for ``--database-url``, a PostgreSQL
database the bench may create a schema in (``bench_ingest_<random>``, dropped at the end). The bench
uses a queue of its own (``bench.opentime.<random>``, deleted at the end).

For each store, one server (one worker, loopback) with webhooks and ``ingest_url`` both on:

1. backlog to durable: the server process is held (SIGSTOP), ``--backlog`` events are published ahead
   (one per message, then 5x as many in messages of 100), the server is let go (SIGCONT), and the clock
   runs until the server's ``opentime_ingest_messages_total{outcome="acked"}``
   (acked = committed) counts them all. The webhook column: ``bench.events``' closed-loop posters
   (64 connections posting one event each, then 4 posting 100), for ``--duration`` seconds.
2. event to visible: ``bench.events.visible``: prime a recipient's cached amp-list, send a
   ``profile.updated`` that changes it (by webhook, or published to the queue with a broker confirm),
   poll the amp-list until it shows; p50/p99 over ``--samples``. Once on an idle server, then again
   while ``--rate`` other events a second arrive by the same path (16 senders on an open-loop
   schedule, each waiting for its 200 or its publish confirm), with the load rate achieved.

Prints one table per store (queue and webhook columns) and writes ``bench/results/ingest.json``. The
load generator runs on the same (2-core) machine as the server and the broker, so rates are lower
bounds.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import secrets
import signal
import subprocess
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import aio_pika
import httpx
import orjson

from app.security.tokens import TokenSigner
from bench.events import (
    Connection,
    Send,
    make_event,
    post_webhook,
    prepare,
    signed,
    throughput,
    visible,
)
from bench.pg_import import execute
from tests.servers import free_port, running

RESULTS = Path(__file__).resolve().parent / "results" / "ingest.json"
ACKED = re.compile(rb'^opentime_ingest_messages_total\{outcome="acked"\} (\S+)$', re.MULTILINE)
BROKER = "amqp://guest:guest@127.0.0.1:5672/"
LANES = 16  # concurrent senders of the steady load, each waiting for its send to be done


class Publisher:
    """One broker connection and a confirming channel: a publish returns once the broker has it."""

    def __init__(self, url: str, queue: str) -> None:
        self.url, self.queue = url, queue
        self._connection: aio_pika.abc.AbstractConnection | None = None
        self._channel: aio_pika.abc.AbstractChannel | None = None

    async def __aenter__(self) -> Publisher:
        self._connection = await aio_pika.connect(self.url)
        self._channel = await self._connection.channel(publisher_confirms=True)
        await self._channel.declare_queue(self.queue, durable=True)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._connection is not None
        await self._connection.close()

    async def publish(self, body: bytes) -> None:
        assert self._channel is not None
        message = aio_pika.Message(body, delivery_mode=aio_pika.DeliveryMode.PERSISTENT)
        await self._channel.default_exchange.publish(message, routing_key=self.queue)

    async def publish_many(self, bodies: list[bytes], window: int = 500) -> None:
        for start in range(0, len(bodies), window):
            await asyncio.gather(*(self.publish(body) for body in bodies[start : start + window]))

    async def delete(self) -> None:
        assert self._channel is not None
        for name in (self.queue, self.queue + ".dead"):
            await self._channel.queue_delete(name)


async def acked(client: httpx.AsyncClient) -> int:
    found = ACKED.search((await client.get("/metrics")).content)
    return 0 if found is None else int(float(found.group(1)))


async def wait_acked(client: httpx.AsyncClient, count: int) -> float:
    """Poll until ``count`` messages are acked; returns the monotonic time it was seen."""
    deadline, timeout = time.monotonic() + 600.0, 600.0
    while (done := await acked(client)) < count:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{done} of {count} messages acked after {timeout} s")
        await asyncio.sleep(0.01)
    return time.monotonic()


async def backlog(
    base: str, publisher: Publisher, server: subprocess.Popen[str], events: int, per_message: int
) -> dict[str, float]:
    """Events/s from a queue holding ``events`` to all of them committed."""
    async with httpx.AsyncClient(base_url=base, timeout=10) as client:
        before = await acked(client)
        # Held, the server takes nothing (a proxy paused in between would do too, but it would sit on
        # the queue path in every phase: one more hop, in this process, competing with the load).
        server.send_signal(signal.SIGSTOP)
        try:
            batches = [[make_event() for _ in range(per_message)] for _ in range(events // per_message)]
            bodies = [orjson.dumps(b[0] if per_message == 1 else b) for b in batches]
            await publisher.publish_many(bodies)
        finally:
            server.send_signal(signal.SIGCONT)
        start = time.monotonic()
        end = await wait_acked(client, before + len(bodies))
    elapsed = end - start
    return {"events_per_s": events / elapsed, "messages_per_s": len(bodies) / elapsed, "events": events}


Sender = Callable[[bytes], Awaitable[None]]


async def paced(rate: float, stop: asyncio.Event, senders: Sequence[Sender]) -> dict[str, float]:
    """One-event bodies at ``rate`` a second until ``stop``, spread over the ``senders`` (each waits for
    its send to be done: a webhook's 200, a publish's confirm); returns the rate achieved."""
    start = time.monotonic() + 0.1
    sent = 0

    async def lane(first: int, send: Sender) -> None:
        nonlocal sent
        due = first
        while not stop.is_set():
            if (wait := start + due / rate - time.monotonic()) > 0:
                await asyncio.sleep(wait)
            await send(orjson.dumps(make_event()))
            sent, due = sent + 1, due + len(senders)

    await asyncio.gather(*(lane(k, send) for k, send in enumerate(senders)))
    return {"events_per_s": sent / (time.monotonic() - start), "events": sent}


async def under_load(
    base: str, signer: TokenSigner, args: Any, senders: Sequence[Sender], probe: Send
) -> dict[str, float]:
    """Event-to-visible probes while ``senders`` keep up ``args.rate`` events a second."""
    stop = asyncio.Event()
    load = asyncio.create_task(paced(args.rate, stop, senders))
    try:
        await asyncio.sleep(1.0)  # into the steady state
        seen = await visible(base, signer, args.samples, probe)
    finally:
        stop.set()
    return {**seen, **{f"load_{k}": v for k, v in (await load).items()}}


async def webhook_lanes(port: int, lanes: int) -> tuple[list[Sender], list[Connection]]:
    connections = [await Connection.open(port) for _ in range(lanes)]

    def sender(connection: Connection) -> Sender:
        async def send(body: bytes) -> None:
            status, answer = await connection.post("/webhooks/events", body, signed(body))
            if status != 200:
                raise RuntimeError(f"{status}: {answer[:200]!r}")

        return send

    return [sender(c) for c in connections], connections


def queue_sender(publisher: Publisher) -> Any:
    async def send(client: httpx.AsyncClient, body: bytes) -> None:
        await publisher.publish(body)  # returns on the broker's confirm; the poll loop does the rest

    return send


async def measure(
    base: str, port: int, queue: str, server: subprocess.Popen[str], args: Any
) -> dict[str, Any]:
    results: dict[str, Any] = {}
    async with Publisher(args.broker, queue) as publisher:
        try:
            await backlog(base, publisher, server, 500, 1)  # warm-up, both paths
            await throughput(port, 1, 4, 1.0)
            results["queue_backlog_1"] = await backlog(base, publisher, server, args.backlog, 1)
            results["queue_backlog_100"] = await backlog(base, publisher, server, args.backlog * 5, 100)
            results["webhook_batch_1"] = await throughput(port, 1, 64, args.duration)
            results["webhook_batch_100"] = await throughput(port, 100, 4, args.duration)
            signer = args.signer
            results["queue_visible"] = await visible(base, signer, args.samples, queue_sender(publisher))
            results["webhook_visible"] = await visible(base, signer, args.samples)
            queue_load = [publisher.publish] * LANES
            results["queue_loaded"] = await under_load(
                base, signer, args, queue_load, queue_sender(publisher)
            )
            senders, connections = await webhook_lanes(port, LANES)
            try:
                results["webhook_loaded"] = await under_load(base, signer, args, senders, post_webhook)
            finally:
                for connection in connections:
                    connection.close()
        finally:
            await publisher.delete()
    return results


@contextmanager
def store_url(database_url: str | None) -> Iterator[str | None]:
    """None (SQLite in the server's folder), or ``database_url`` in a fresh schema, dropped after."""
    if database_url is None:
        yield None
        return
    schema = f"bench_ingest_{secrets.token_hex(4)}"
    asyncio.run(execute(database_url, f"CREATE SCHEMA {schema}"))
    try:
        yield f"{database_url}?search_path={schema}"
    finally:
        asyncio.run(execute(database_url, f"DROP SCHEMA {schema} CASCADE"))


def run_store(name: str, database_url: str | None, args: Any) -> dict[str, Any]:
    queue = f"bench.opentime.{secrets.token_hex(6)}"
    with (
        tempfile.TemporaryDirectory(prefix="opentime-bench-ingest-") as tmp,
        store_url(database_url) as url,
    ):
        port = free_port()
        extra = f'ingest_url = "{args.broker}"\ningest_queue = "{queue}"\ningest_prefetch = {args.prefetch}\n'
        config, args.signer = prepare(Path(tmp), port, url, extra)
        base = f"http://127.0.0.1:{port}"
        print(f"{name}: server on {base}, queue {queue}", flush=True)
        with running(["serve", "--config", str(config)], port, Path(tmp) / "server.log") as server:
            return asyncio.run(measure(base, port, queue, server, args))


def table(name: str, r: dict[str, Any], args: Any) -> str:
    def rate(key: str, prefix: str = "") -> str:
        return f"{r[key][prefix + 'events_per_s']:,.0f} ev/s"

    def lat(key: str) -> str:
        return f"p50 {r[key]['p50_ms']:.1f} / p99 {r[key]['p99_ms']:.1f} ms"

    rows = [
        ("to durable, 1 event per message/POST", rate("queue_backlog_1"), rate("webhook_batch_1")),
        ("to durable, 100 events per message/POST", rate("queue_backlog_100"), rate("webhook_batch_100")),
        ("event to visible (amp-list), idle", lat("queue_visible"), lat("webhook_visible")),
        (f"... under {args.rate:,.0f} ev/s of other events", lat("queue_loaded"), lat("webhook_loaded")),
        ("    (load achieved)", rate("queue_loaded", "load_"), rate("webhook_loaded", "load_")),
    ]
    lines = [f"{name:<44}{'queue (RabbitMQ)':>28}{'webhook':>28}"]
    lines += [f"{label:<44}{q:>28}{w:>28}" for label, q, w in rows]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--database-url", help="also run against this PostgreSQL database (a fresh schema)")
    parser.add_argument("--broker", default=BROKER)
    parser.add_argument("--backlog", type=int, default=20_000, help="events published ahead (x5 in batches)")
    parser.add_argument("--prefetch", type=int, default=100)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--rate", type=float, default=300.0, help="steady-rate events/s")
    parser.add_argument("--samples", type=int, default=200)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    if args.quick:
        args.backlog, args.duration, args.samples = 2000, 2.0, 30
    stores = [("SQLite", None)] + ([("PostgreSQL", args.database_url)] if args.database_url else [])
    results = {name: run_store(name, url, args) for name, url in stores}
    for name, r in results.items():
        print()
        print(table(name, r, args))
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
