"""The group-committing EventWriter on a real SQLite store: shared transactions, invalidation after commit.

What one commit does (idempotent ids, field times, failures per event) is the EventRepository
contract, in tests/contract/test_events.py.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import orjson
import pytest

from app.content.invalidation import LocalInvalidation
from app.ingest.events import Event, parse_event
from app.ingest.writer import EventWriter
from app.store import SQLiteProfileStore
from app.store.base import EventRepository, EventStatus, StoreError

pytestmark = pytest.mark.anyio
NOW = 1_714_557_600.0


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SQLiteProfileStore]:
    store = SQLiteProfileStore(tmp_path / "p.db", clock=lambda: NOW)
    await store.open()
    yield store
    await store.close()


def ev(id_: str, recipient: str = "r1", **payload: Any) -> Event:
    item = {
        "id": id_,
        "type": "profile.updated",
        "recipient": recipient,
        "occurred_at": "2024-05-01T09:00:00Z",
    }
    return parse_event({**item, "payload": payload or {"n": id_}}, now=NOW)


async def attributes(store: SQLiteProfileStore, recipient: str) -> Any:
    profile = await store.profiles.get(recipient)
    return None if profile is None else orjson.loads(profile.attributes)


class CountingEvents:
    """The real event repository, with each commit counted and held until released."""

    def __init__(self, events: EventRepository) -> None:
        self.events = events
        self.transactions = 0
        self.gate = asyncio.Event()
        self.gate.set()

    async def commit(self, events: Sequence[Event], now: float) -> list[EventStatus]:
        self.transactions += 1
        await self.gate.wait()
        return await self.events.commit(events, now)


def recording() -> tuple[LocalInvalidation, list[str]]:
    seen: list[str] = []
    invalidation = LocalInvalidation()
    invalidation.subscribe(seen.extend)
    return invalidation, seen


async def test_concurrent_writes_share_transactions(store: SQLiteProfileStore) -> None:
    counting = CountingEvents(store.events)
    invalidation, changed = recording()
    writer = EventWriter(counting, clock=lambda: NOW, invalidation=invalidation)
    counting.gate.clear()  # the first commit is "in flight" while 50 more requests arrive
    tasks = [asyncio.create_task(writer.write([ev("e0", "r0")]))]
    await asyncio.sleep(0.01)
    tasks += [asyncio.create_task(writer.write([ev(f"e{i}", f"r{i}")])) for i in range(1, 51)]
    await asyncio.sleep(0.01)
    counting.gate.set()
    results = await asyncio.gather(*tasks)
    assert results == [["applied"]] * 51
    assert counting.transactions == 2  # the first alone, then the 50 that waited, together
    assert sorted(changed) == sorted(f"r{i}" for i in range(51))
    assert await attributes(store, "r50") == {"n": "e50"}


async def test_listeners_see_applied_recipients_before_the_writer_answers(store: SQLiteProfileStore) -> None:
    invalidation = LocalInvalidation()
    writer = EventWriter(store.events, clock=lambda: NOW, invalidation=invalidation)
    answered: list[str] = []
    invalidation.subscribe(lambda recipients: answered.append(f"invalidated {sorted(recipients)}"))
    await store.profiles.upsert_many([("bad", b"[1]")])
    statuses = await writer.write([ev("a", "r1"), ev("b", "r2"), ev("c", "bad")])
    answered.append("answered")
    assert statuses == ["applied", "applied", "unreadable-profile"]
    assert answered == ["invalidated ['r1', 'r2']", "answered"]
    assert await writer.write([ev("a", "r1")]) == ["duplicate"]
    assert answered == ["invalidated ['r1', 'r2']", "answered"]  # nothing changed: nobody told


async def test_a_failing_listener_neither_fails_the_commit_nor_the_other_listeners(
    store: SQLiteProfileStore,
) -> None:
    seen: list[str] = []

    def broken(recipients: frozenset[str]) -> None:
        raise RuntimeError("cache is broken")

    invalidation = LocalInvalidation()
    invalidation.subscribe(broken)
    invalidation.subscribe(seen.extend)
    writer = EventWriter(store.events, clock=lambda: NOW, invalidation=invalidation)
    assert await writer.write([ev("a")]) == ["applied"]
    assert seen == ["r1"]


async def test_each_request_gets_its_own_statuses(store: SQLiteProfileStore) -> None:
    writer = EventWriter(store.events, clock=lambda: NOW, invalidation=LocalInvalidation())
    first, second = await asyncio.gather(writer.write([ev("a"), ev("b")]), writer.write([ev("a"), ev("c")]))
    assert first == ["applied", "applied"]
    assert second == ["duplicate", "applied"]


async def test_a_failed_commit_fails_every_waiter_and_the_writer_recovers(tmp_path: Path) -> None:
    store = SQLiteProfileStore(tmp_path / "p.db")
    await store.open()
    invalidation, seen = recording()
    writer = EventWriter(store.events, clock=lambda: NOW, invalidation=invalidation)
    await store.run_write(lambda c: c.execute("ALTER TABLE events RENAME TO hidden"))
    results = await asyncio.gather(writer.write([ev("a")]), writer.write([ev("b")]), return_exceptions=True)
    assert all(isinstance(r, StoreError) for r in results)
    assert await attributes(store, "r1") is None  # rolled back with the events row
    assert seen == []  # nothing committed: nothing to invalidate
    await store.run_write(lambda c: c.execute("ALTER TABLE hidden RENAME TO events"))
    assert await writer.write([ev("a")]) == ["applied"]
    await store.close()


async def test_a_poison_event_fails_alone_in_a_shared_transaction(store: SQLiteProfileStore) -> None:
    # Attack: an event whose result the store cannot encode (here an integer past 64 bits, built
    # directly since parsing refuses it) once rolled back the whole group commit: every request
    # sharing it got 503, on every retry. Each event now runs under its own savepoint.
    poison = Event("bad", "profile.updated", "r1", "2024-05-01T09:00:00.000000Z", {"big": 2**64})
    counting = CountingEvents(store.events)
    writer = EventWriter(counting, clock=lambda: NOW, invalidation=LocalInvalidation())
    counting.gate.clear()
    first = asyncio.create_task(writer.write([ev("a", a=1), poison]))
    second = asyncio.create_task(writer.write([ev("c", c=1)]))
    await asyncio.sleep(0.01)
    counting.gate.set()
    assert await asyncio.gather(first, second) == [["applied", "failed"], ["applied"]]
    assert counting.transactions == 1
    assert await attributes(store, "r1") == {"a": 1, "c": 1}


async def test_beyond_the_queue_bound_a_request_is_refused_at_once_and_counted(
    store: SQLiteProfileStore,
) -> None:
    # Overload: with the store slow, queued webhook requests grew without bound (memory, and answers
    # that come too late to matter). Past the bound a request gets StoreError (503) straight away.
    counting = CountingEvents(store.events)
    writer = EventWriter(counting, clock=lambda: NOW, invalidation=LocalInvalidation(), max_queued=4)
    counting.gate.clear()
    in_flight = asyncio.create_task(writer.write([ev("a", "r0")]))
    await asyncio.sleep(0.01)
    queued = [asyncio.create_task(writer.write([ev(f"q{i}", "r1"), ev(f"p{i}", "r2")])) for i in range(2)]
    await asyncio.sleep(0.01)
    with pytest.raises(StoreError, match="more than 4 events wait"):
        await writer.write([ev("late")])
    assert writer.rejected == 1
    counting.gate.set()
    assert await asyncio.gather(in_flight, *queued) == [["applied"], ["applied"] * 2, ["applied"] * 2]
    assert await writer.write([ev("late")]) == ["applied"]  # room again


async def test_counts_what_metrics_show_committed_failed_waiting_and_late(tmp_path: Path) -> None:
    store = SQLiteProfileStore(tmp_path / "p.db")
    await store.open()
    now = [NOW]
    counting = CountingEvents(store.events)
    writer = EventWriter(counting, clock=lambda: now[0], invalidation=LocalInvalidation())
    assert (writer.queued, writer.oldest_wait(NOW)) == (0, 0.0)
    counting.gate.clear()  # the first commit hangs: its events and the ones behind it wait
    first = asyncio.create_task(writer.write([ev("a"), ev("b")]))
    await asyncio.sleep(0.01)
    now[0] = NOW + 5
    second = asyncio.create_task(writer.write([ev("a"), ev("c")]))
    await asyncio.sleep(0.01)
    assert writer.queued == 4
    assert writer.oldest_wait(NOW + 7) == 7.0  # the first request, in the transaction in flight
    counting.gate.set()
    assert await asyncio.gather(first, second) == [["applied", "applied"], ["duplicate", "applied"]]
    assert (writer.queued, writer.oldest_wait(NOW + 8)) == (0, 0.0)
    assert writer.committed == {"applied": 3, "duplicate": 1} and writer.failed == 0
    # Occurred at 09:00, durable at 10:00:05 (the clock when the commits returned): just past an hour.
    assert dict(writer.delay.buckets())["3600.0"] == 0 and dict(writer.delay.buckets())["21600.0"] == 3
    assert writer.delay.sum == 3 * 3605.0
    await store.run_write(lambda c: c.execute("ALTER TABLE events RENAME TO hidden"))
    results = await asyncio.gather(writer.write([ev("d"), ev("e")]), return_exceptions=True)
    assert isinstance(results[0], StoreError)
    assert writer.failed == 2 and writer.committed["applied"] == 3 and writer.queued == 0
    await store.close()
