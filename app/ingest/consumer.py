"""The stream consumer: messages from an ``EventSource`` into the store, with the webhook's rules.

Each message is parsed and validated like a webhook body (``parse_batch``), its valid events go through
the group-committing ``EventWriter`` (so a burst of messages shares transactions, and the changed
recipients are announced on the invalidation seam after the commit), and only then is it acked.
A message with anything wrong in it (not JSON, no valid event, an event rejected or not applicable) is
dead-lettered with the reason, after its valid events, if any, were committed (ids make a replay of the
parked message safe). When the store fails, nothing is dead-lettered: the message is handed back for
redelivery after a backoff, and as prefetch bounds the messages in flight, consuming stalls until the
store answers again.

Stopping (``stop()``, on SIGTERM/SIGINT) takes no new message, lets the ones in flight finish (acked
after their commit, or handed back), then closes the source; whatever it did not ack is redelivered.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import orjson

from app.ingest import values
from app.ingest.events import BatchError, Rule, parse_batch
from app.ingest.source import Delivery, EventSource
from app.ingest.writer import EventWriter
from app.store.base import StoreError

logger = logging.getLogger(__name__)

STORE_RETRY_S = 1.0
MAX_STORE_RETRY_S = 30.0
STOP_GRACE_S = 30.0


@dataclass(slots=True)
class Counts:
    messages: int = 0  # acked or dead-lettered
    applied: int = 0
    duplicates: int = 0
    dead_lettered: int = 0
    retried: int = 0  # handed back because the store failed

    def line(self) -> str:
        return (
            f"messages {self.messages}, events applied {self.applied}, duplicates {self.duplicates},"
            f" dead-lettered {self.dead_lettered}, retried {self.retried}"
        )


class StreamConsumer:
    def __init__(
        self,
        source: EventSource,
        writer: EventWriter,
        *,
        clock: Callable[[], float],
        rules: Mapping[str, Rule] | None = None,
        max_body_bytes: int | None = None,
        progress_every: int = 1000,
        progress: Callable[[str], None] = logger.info,
    ) -> None:
        self._source = source
        self._writer = writer
        self._clock = clock
        self._rules = rules
        self._max_body_bytes = max_body_bytes
        self._progress_every = progress_every
        self._progress = progress
        self._slots = asyncio.Semaphore(source.prefetch)
        self._tasks: set[asyncio.Task[None]] = set()
        self._store_backoff = STORE_RETRY_S
        self.counts = Counts()

    @property
    def in_flight(self) -> int:
        """Deliveries taken and not settled yet."""
        return len(self._tasks)

    async def run(self, stop: asyncio.Event) -> Counts:
        """Consume until ``stop`` is set; returns the counts."""
        taking = asyncio.create_task(self._take())
        stopping = asyncio.create_task(stop.wait())
        await asyncio.wait({taking, stopping}, return_when=asyncio.FIRST_COMPLETED)
        stopping.cancel()
        taking.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await taking
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=STOP_GRACE_S)
        await self._source.close()
        self._progress(f"stopped: {self.counts.line()}")
        return self.counts

    async def _take(self) -> None:
        async for delivery in self._source.deliveries():
            await self._slots.acquire()
            task = asyncio.create_task(self._handle(delivery))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _handle(self, delivery: Delivery) -> None:
        try:
            await self.handle(delivery)
        except Exception:
            logger.exception("a message could not be handled: it will be delivered again")
        finally:
            self._slots.release()

    async def handle(self, delivery: Delivery) -> None:
        """Settle one delivery: ack after commit, dead-letter poison, retry on a store failure."""
        if self._max_body_bytes is not None and len(delivery.body) > self._max_body_bytes:
            return await self._park(delivery, f"body larger than {self._max_body_bytes} bytes")
        try:
            events, errors = parse_batch(values.loads(delivery.body), now=self._clock(), rules=self._rules)
        except orjson.JSONDecodeError as exc:
            return await self._park(delivery, f"not valid JSON: {exc}")
        except BatchError as exc:
            return await self._park(delivery, str(exc))
        reasons = [f"event {e.index} {e.field}: {e.error}" for e in errors]
        if events:
            try:
                statuses = await self._writer.write([event for _, event in events])
            except StoreError as exc:
                return await self._retry(delivery, exc)
            self._store_backoff = STORE_RETRY_S
            self.counts.applied += statuses.count("applied")
            self.counts.duplicates += statuses.count("duplicate")
            reasons += [
                f"event {index} ({event.id}): {status}"
                for (index, event), status in zip(events, statuses, strict=True)
                if status not in ("applied", "duplicate")
            ]
        if reasons:
            return await self._park(delivery, "; ".join(reasons))
        await delivery.ack()
        self._tick()

    async def _park(self, delivery: Delivery, reason: str) -> None:
        logger.warning("dead-lettering a message: %s", reason)
        await delivery.dead_letter(reason)
        self.counts.dead_lettered += 1
        self._tick()

    async def _retry(self, delivery: Delivery, error: StoreError) -> None:
        wait, self._store_backoff = self._store_backoff, min(self._store_backoff * 2, MAX_STORE_RETRY_S)
        logger.warning("store failed (%s): message handed back in %.1f s", error, wait)
        await asyncio.sleep(wait)
        await delivery.retry()
        self.counts.retried += 1

    def _tick(self) -> None:
        self.counts.messages += 1  # settled for good: acked or dead-lettered
        if self._progress_every and self.counts.messages % self._progress_every == 0:
            self._progress(self.counts.line())
