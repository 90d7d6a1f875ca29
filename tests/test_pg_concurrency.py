"""Several processes writing the same profiles in one PostgreSQL database at once: imports, events and
form answers never lose each other's writes and never deadlock each other.

Each race is made deterministic with a transaction held open on a connection of the test's own: the
store's transaction waits on one of its rows, at a chosen point, while the other writer goes ahead.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator

import orjson
import pytest

from app.store import Store, open_store
from app.store.base import Submission
from tests.contract.conftest import NOW, event
from tests.pg import named, open_transaction, query, until_waiting_for_a_lock

pytestmark = pytest.mark.anyio

_FAKE_EVENT = "INSERT INTO events VALUES ($1, 'other', 'profile.updated', '2024-05-01T08:00:00Z', 0)"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def stores(pg_url: str) -> AsyncIterator[tuple[Store, Store, str]]:
    """Two stores on one database, as two nodes would have; the first one's sessions are named."""
    name = f"ot_{secrets.token_hex(4)}"
    first = open_store(named(pg_url, name), clock=lambda: NOW, timeout_ms=20_000)
    second = open_store(pg_url, clock=lambda: NOW, timeout_ms=20_000)
    await first.open()
    await second.open()
    try:
        yield first, second, name
    finally:
        await first.close()
        await second.close()


async def attributes(store: Store, recipient: str) -> object:
    profile = await store.profiles.get(recipient)
    return None if profile is None else orjson.loads(profile.attributes)


async def test_an_import_that_creates_a_recipient_during_an_event_keeps_its_attributes(
    stores: tuple[Store, Store, str], pg_url: str
) -> None:
    # Data loss: the event read r1 as missing; an import then created r1 and committed (acknowledged);
    # the event's write replaced the imported attributes with its own. Now it runs again on top.
    events_node, import_node, name = stores
    async with open_transaction(pg_url) as other:
        await other.execute(_FAKE_EVENT, "e1")  # the event will wait here, after reading r1
        commit = asyncio.create_task(events_node.events.commit([event("e1", "r1", city="Paris")], NOW))
        await until_waiting_for_a_lock(name)
        assert await import_node.profiles.upsert_many([("r1", b'{"plan":"gold"}')]) == 1
        await other.execute("ROLLBACK")
        assert await commit == ["applied"]
    assert await attributes(import_node, "r1") == {"plan": "gold", "city": "Paris"}


async def test_an_import_that_creates_a_recipient_during_a_form_answer_keeps_its_attributes(
    stores: tuple[Store, Store, str], pg_url: str
) -> None:
    forms_node, import_node, name = stores
    answer = Submission("s1", "camp", "block", "r1", b"{}", ((("size",), "M"),))
    async with open_transaction(pg_url) as importing:
        # An import is inserting r1 (not committed yet) as the answer reads it: missing.
        await importing.execute(
            "INSERT INTO profiles VALUES ('r1', '{\"plan\":\"gold\"}'::bytea, '{}', 1, 0)"
        )
        save = asyncio.create_task(forms_node.forms.save(answer, NOW))
        await until_waiting_for_a_lock(name)  # writing r1, it waits for the import
        await importing.execute("COMMIT")
    saved = await save
    assert not saved.duplicate and saved.profile_changed
    assert await attributes(import_node, "r1") == {"plan": "gold", "size": "M"}


async def test_an_event_id_recorded_meanwhile_by_another_node_is_a_duplicate_and_the_rest_apply(
    stores: tuple[Store, Store, str], pg_url: str
) -> None:
    # The whole group commit used to fail (503 for every request in it) on one concurrent id.
    node, _, name = stores
    async with open_transaction(pg_url) as other:
        await other.execute(_FAKE_EVENT, "e2")
        commit = asyncio.create_task(node.events.commit([event("e1", "r1"), event("e2", "r2")], NOW))
        await until_waiting_for_a_lock(name)
        await other.execute("COMMIT")
        assert await commit == ["applied", "duplicate"]
    assert await attributes(node, "r1") == {"n": "e1"}
    assert await attributes(node, "r2") is None


async def test_imports_and_events_over_the_same_recipients_in_opposite_orders_do_not_deadlock(
    stores: tuple[Store, Store, str], pg_url: str
) -> None:
    first, second, _ = stores
    ids = [f"r{i:05d}" for i in range(20_000)]
    await first.profiles.upsert_many([(r, b'{"v":0}') for r in ids])
    for attempt in range(3):
        forward = [(r, f'{{"v":"a{attempt}"}}'.encode()) for r in ids]
        backward = [(r, f'{{"v":"b{attempt}"}}'.encode()) for r in reversed(ids)]
        results = await asyncio.gather(
            first.profiles.upsert_many(forward), second.profiles.upsert_many(backward), return_exceptions=True
        )
        assert results == [20_000, 20_000]
    events = [event(f"e{i}", r) for i, r in enumerate(ids[::100])]
    backward = [(r, b'{"v":"c"}') for r in reversed(ids)]
    results = await asyncio.gather(
        first.events.commit(events, NOW), second.profiles.upsert_many(backward), return_exceptions=True
    )
    assert results == [["applied"] * len(events), 20_000]
    assert query(pg_url, "SELECT count(*) FROM events") == [(len(events),)]
