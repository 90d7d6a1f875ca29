"""The contract between a message source (RabbitMQ here; Kafka, Kinesis, Pub/Sub elsewhere) and the
stream consumer (``app.ingest.consumer``).

A source hands over ``Delivery`` objects: one message's body (the same JSON a webhook carries: one event
or an array of events) and three ways to settle it. The consumer settles every delivery exactly once:

- ``ack()`` only after the message's events are committed in the store and announced on the
  invalidation seam. The source must then never deliver it again (commit its offset, ack it).
- ``dead_letter(reason)`` for a poison message (not JSON, an invalid event, an unknown type): the
  source parks the body, with ``reason`` beside it, where an operator can read it (a dead-letter queue
  or topic), and only then forgets the original. It is never delivered again by itself.
- ``retry()`` when the message could not be processed for a passing reason (the store is down): the
  source delivers it again later. The consumer waits (backs off) before calling it.

A delivery never settled (the process was killed, or stopped before the commit) must be delivered again:
sources give at-least-once delivery, and event ids make a second delivery a no-op. ``deliveries()`` keeps
yielding across broker outages (it reconnects, with backoff) until ``close()`` is called; a
delivery settled after its connection was lost is a no-op (the broker redelivers it). ``prefetch``
bounds how many deliveries may be unsettled at once. ``connected`` and ``connects`` are read by a server's
``/readyz`` and ``/metrics`` (stream ingest inside ``opentime serve``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Protocol


class Delivery(Protocol):
    """One message from the source, to be settled once."""

    @property
    def body(self) -> bytes: ...

    async def ack(self) -> None:
        """Done: the events are durable. Never deliver this message again."""
        ...

    async def dead_letter(self, reason: str) -> None:
        """Poison: park the body with ``reason`` for an operator; never deliver it again."""
        ...

    async def retry(self) -> None:
        """Not processed (a passing failure): deliver it again later."""
        ...


class EventSource(Protocol):
    """Where event messages come from (see the module docstring for the contract)."""

    @property
    def prefetch(self) -> int:
        """At most this many deliveries are unsettled at once."""
        ...

    @property
    def connected(self) -> bool:
        """Consuming now (False while connecting or reconnecting)."""
        ...

    @property
    def connects(self) -> int:
        """Successful connections so far: the ones after the first are reconnects."""
        ...

    def deliveries(self) -> AsyncIterator[Delivery]:
        """Messages as they arrive, across reconnects, until ``close()``."""
        ...

    async def close(self) -> None:
        """Stop yielding deliveries and let go of the connection; unsettled messages are redelivered."""
        ...
