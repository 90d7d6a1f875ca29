"""Stream ingest inside the server (setting ``ingest_url``): the stream consumer as a background task
of each server process, beside the HTTP server.

``running_ingest`` is entered by the services' lifespan after the store and the event writer exist and
left before they close: it starts ``StreamConsumer.run`` as a task, and at shutdown sets its stop
event, so the consumer takes no new message, lets the ones in flight commit and be acked (for up to
``STOP_GRACE_S``), then closes the connection; whatever was not acked is redelivered by the broker.
The consumer shares the webhooks' ``EventWriter`` (one group commit, one invalidation seam), so an event
from the queue is visible exactly when the same event posted by webhook would be.

With several workers, each one is a consumer of the same queue (competing consumers): the broker
gives each message to one of them, and as a message is acked only after its commit, a worker that
dies hands its unacked messages back to the others.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager

from app.ingest.consumer import Counts, StreamConsumer
from app.ingest.events import Rule
from app.ingest.source import EventSource
from app.ingest.writer import EventWriter

logger = logging.getLogger(__name__)


class ServerIngest:
    """A running stream consumer, as ``/readyz`` and ``/metrics`` see it."""

    def __init__(self, source: EventSource, consumer: StreamConsumer, queue: str) -> None:
        self.source = source
        self.consumer = consumer
        self.queue = queue
        self.stopped = False  # the task ended (shutdown, or a bug: then it is logged)

    @property
    def state(self) -> str:
        """``consuming``, ``connecting`` (first connection or a broker outage) or ``stopped``."""
        if self.stopped:
            return "stopped"
        return "consuming" if self.source.connected else "connecting"

    @property
    def counts(self) -> Counts:
        return self.consumer.counts

    @property
    def reconnects(self) -> int:
        return max(self.source.connects - 1, 0)

    def report(self) -> dict[str, object]:
        """For ``/readyz``: the state and the queue, never the broker URL (it holds a password)."""
        return {"state": self.state, "queue": self.queue}


def amqp_source(url: str, queue: str, prefetch: int) -> EventSource:
    # Imported here: a server without ingest_url never loads aio-pika.
    from app.ingest.amqp import AmqpSource, quiet_client_logs

    quiet_client_logs()
    return AmqpSource(url, queue, prefetch=prefetch)


@asynccontextmanager
async def running_ingest(
    source: EventSource,
    queue: str,
    writer: EventWriter,
    *,
    rules: Mapping[str, Rule],
    max_body_bytes: int,
    clock: Callable[[], float] = time.time,
) -> AsyncIterator[ServerIngest]:
    """Consume ``source`` in the background while the block runs; stop cleanly when it ends."""
    consumer = StreamConsumer(
        source, writer, clock=clock, rules=rules, max_body_bytes=max_body_bytes, progress_every=0
    )
    ingest = ServerIngest(source, consumer, queue)
    stop = asyncio.Event()
    task = asyncio.create_task(consumer.run(stop), name="opentime-ingest")
    task.add_done_callback(lambda done: _ended(ingest, done))
    try:
        yield ingest
    finally:
        stop.set()
        with contextlib.suppress(Exception):  # an error: already logged by _ended
            await task
        with contextlib.suppress(Exception):
            await source.close()  # in case run() died before closing it (a second close is a no-op)


def _ended(ingest: ServerIngest, task: asyncio.Task[Counts]) -> None:
    ingest.stopped = True
    if task.cancelled():
        return
    error = task.exception()
    if error is not None:
        logger.error("stream ingest stopped by an error", exc_info=error)
    else:
        logger.info("stream ingest stopped: %s", task.result().line())
