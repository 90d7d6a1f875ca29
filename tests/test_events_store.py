"""Events into a real SQLite store: idempotency, one transaction, group commit."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar

import orjson
import pytest

from app.ingest.events import Event, parse_event
from app.store import SQLiteProfileStore
from app.store.base import StoreError
from app.store.sqlite.events import EventWriter, apply_events

T = TypeVar("T")
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
    profile = await store.get(recipient)
    return None if profile is None else orjson.loads(profile.attributes)


class CountingStore:
    """The real store, with each write transaction counted and held until released."""

    def __init__(self, store: SQLiteProfileStore) -> None:
        self.store = store
        self.transactions = 0
        self.gate = asyncio.Event()
        self.gate.set()

    async def run_write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        self.transactions += 1
        await self.gate.wait()
        return await self.store.run_write(fn)


async def test_events_and_profile_commit_together_and_ids_are_idempotent(store: SQLiteProfileStore) -> None:
    statuses = await store.run_write(lambda c: apply_events(c, [ev("a"), ev("b", "r2"), ev("a")], NOW))
    assert statuses == ["applied", "applied", "duplicate"]
    assert await attributes(store, "r1") == {"n": "a"}
    profile = await store.get("r2")
    assert profile is not None and profile.version == 1
    again = await store.run_write(lambda c: apply_events(c, [ev("b", "r2", n="changed")], NOW))
    assert again == ["duplicate"]
    profile = await store.get("r2")
    assert profile is not None and profile.version == 1  # a duplicate writes nothing


async def test_field_times_are_stored(store: SQLiteProfileStore) -> None:
    await store.run_write(lambda c: apply_events(c, [ev("a", x=1)], NOW))
    times = await store.run_read(lambda c: c.execute("SELECT field_times FROM profiles").fetchone()[0])
    assert orjson.loads(times) == {"x": ["2024-05-01T09:00:00.000000Z", "a"]}


async def test_unreadable_profile_is_left_alone_and_the_event_not_recorded(store: SQLiteProfileStore) -> None:
    await store.upsert_many([("r1", b"[1, 2]")])
    statuses = await store.run_write(lambda c: apply_events(c, [ev("a"), ev("b", "r2")], NOW))
    assert statuses == ["unreadable-profile", "applied"]
    assert await attributes(store, "r1") == [1, 2]
    ids = await store.run_read(lambda c: [r[0] for r in c.execute("SELECT id FROM events")])
    assert ids == ["b"]


async def test_concurrent_writes_share_transactions(store: SQLiteProfileStore) -> None:
    counting = CountingStore(store)
    changed: list[str] = []

    def on_commit(recipients: Iterable[str]) -> None:
        changed.extend(recipients)

    writer = EventWriter(counting, clock=lambda: NOW, on_commit=on_commit)
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


async def test_each_request_gets_its_own_statuses(store: SQLiteProfileStore) -> None:
    writer = EventWriter(store, clock=lambda: NOW)
    first, second = await asyncio.gather(writer.write([ev("a"), ev("b")]), writer.write([ev("a"), ev("c")]))
    assert first == ["applied", "applied"]
    assert second == ["duplicate", "applied"]


async def test_a_failed_commit_fails_every_waiter_and_the_writer_recovers(tmp_path: Path) -> None:
    store = SQLiteProfileStore(tmp_path / "p.db")
    await store.open()
    writer = EventWriter(store, clock=lambda: NOW)
    await store.run_write(lambda c: c.execute("DROP TABLE events"))
    results = await asyncio.gather(writer.write([ev("a")]), writer.write([ev("b")]), return_exceptions=True)
    assert all(isinstance(r, StoreError) for r in results)
    assert await attributes(store, "r1") is None  # rolled back with the events row
    await store.close()


async def test_a_poison_event_fails_alone_in_a_shared_transaction(store: SQLiteProfileStore) -> None:
    # Attack: an event whose result the store cannot encode (here an integer past 64 bits, built
    # directly since parsing refuses it) once rolled back the whole group commit: every request
    # sharing it got 503, on every retry. Each event now runs under its own savepoint.
    poison = Event("bad", "profile.updated", "r1", "2024-05-01T09:00:00.000000Z", {"big": 2**64})
    counting = CountingStore(store)
    writer = EventWriter(counting, clock=lambda: NOW)
    counting.gate.clear()
    first = asyncio.create_task(writer.write([ev("a", a=1), poison]))
    second = asyncio.create_task(writer.write([ev("c", c=1)]))
    await asyncio.sleep(0.01)
    counting.gate.set()
    assert await asyncio.gather(first, second) == [["applied", "failed"], ["applied"]]
    assert counting.transactions == 1
    assert await attributes(store, "r1") == {"a": 1, "c": 1}
    ids = await store.run_read(lambda c: sorted(r[0] for r in c.execute("SELECT id FROM events")))
    assert ids == ["a", "c"]  # the failed event is not recorded: it can be sent again once fixed
