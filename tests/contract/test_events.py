"""EventRepository contract: idempotent ids, per-field last-writer-wins, failures isolated per event."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from app.ingest.events import Event
from app.store.base import Store, StoreError
from tests.contract.conftest import NOW, event

pytestmark = pytest.mark.anyio


async def attributes(store: Store, recipient: str = "r1") -> Any:
    profile = await store.profiles.get(recipient)
    return None if profile is None else orjson.loads(profile.attributes)


async def test_applied_then_replayed_ids_are_duplicates(store: Store) -> None:
    statuses = await store.events.commit([event("a"), event("b", "r2"), event("a")], NOW)
    assert statuses == ["applied", "applied", "duplicate"]
    assert await attributes(store) == {"n": "a"}
    again = await store.events.commit([event("b", "r2", n="changed")], NOW)
    assert again == ["duplicate"]
    profile = await store.profiles.get("r2")
    assert profile is not None and profile.version == 1  # a duplicate writes nothing
    assert profile.updated_at == NOW


async def test_fields_resolve_by_occurred_at_whatever_the_arrival_order(store: Store) -> None:
    newer = event("new", at="2024-05-01T09:30:00Z", tier="gold", city="Oslo")
    older = event("old", at="2024-05-01T09:00:00Z", tier="silver", name="Ada")
    assert await store.events.commit([newer], NOW) == ["applied"]
    assert await store.events.commit([older], NOW) == ["applied"]  # recorded, but loses on tier
    assert await attributes(store) == {"tier": "gold", "city": "Oslo", "name": "Ada"}


async def test_same_time_ties_break_by_event_id(store: Store) -> None:
    await store.events.commit([event("b", tier="from-b")], NOW)
    await store.events.commit([event("a", tier="from-a")], NOW)
    assert await attributes(store) == {"tier": "from-b"}


async def test_events_accumulate_in_one_profile_version_per_commit(store: Store) -> None:
    await store.events.commit([event("a", x=1), event("b", y=2)], NOW)
    profile = await store.profiles.get("r1")
    assert profile is not None and profile.version == 1
    assert orjson.loads(profile.attributes) == {"x": 1, "y": 2}


async def test_an_unreadable_profile_is_left_alone_and_its_events_not_recorded(store: Store) -> None:
    await store.profiles.upsert_many([("r1", b"[1, 2]")])
    statuses = await store.events.commit([event("a"), event("b", "r2")], NOW)
    assert statuses == ["unreadable-profile", "applied"]
    assert await attributes(store) == [1, 2]
    await store.profiles.upsert_many([("r1", b"{}")])  # fixed: the same event can be sent again
    assert await store.events.commit([event("a")], NOW) == ["applied"]


async def test_an_event_that_cannot_be_stored_fails_alone(store: Store) -> None:
    # Attack: an event whose result the store cannot encode (an integer past 64 bits, built directly
    # since parsing refuses it) must not roll back the other events sharing the transaction.
    poison = Event("bad", "profile.updated", "r1", "2024-05-01T09:00:00.000000Z", {"big": 2**64})
    statuses = await store.events.commit([event("a", a=1), poison, event("c", "r2")], NOW)
    assert statuses == ["applied", "failed", "applied"]
    assert await attributes(store) == {"a": 1}
    fixed = Event("bad", "profile.updated", "r1", "2024-05-01T09:00:00.000000Z", {"big": 1})
    assert await store.events.commit([fixed], NOW) == ["applied"]  # the failed id was not recorded


async def test_a_closed_store_fails_with_store_error(closed_store: Store) -> None:
    with pytest.raises(StoreError):
        await closed_store.events.commit([event("a")], NOW)
