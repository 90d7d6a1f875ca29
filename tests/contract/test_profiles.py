"""ProfileRepository contract: round trips, versions, batched lookups, errors as StoreError."""

from __future__ import annotations

import asyncio

import pytest

from app.store.base import Profile, Store, StoreError
from tests.contract.conftest import NOW

pytestmark = pytest.mark.anyio


async def test_round_trip_and_count(store: Store) -> None:
    profiles = store.profiles
    assert await profiles.upsert_many([("r1", b'{"name":"Ada"}'), ("r2", b"{}")]) == 2
    assert await profiles.get("r1") == Profile("r1", b'{"name":"Ada"}', 1, NOW)
    assert await profiles.get("nobody") is None
    assert await profiles.count() == 2
    await profiles.ping()


async def test_identical_upserts_change_nothing_and_changes_bump_the_version(store: Store) -> None:
    profiles = store.profiles
    await profiles.upsert_many([("r1", b'{"a":1}')])
    assert await profiles.upsert_many([("r1", b'{"a":1}')]) == 0
    assert await profiles.upsert_many([("r1", b'{"a":2}'), ("r2", b"{}")]) == 2
    assert await profiles.get("r1") == Profile("r1", b'{"a":2}', 2, NOW)
    assert await profiles.upsert_many([]) == 0


async def test_get_many_skips_missing_and_repeated_ids(store: Store) -> None:
    await store.profiles.upsert_many([(f"r{i}", b"{}") for i in range(1200)])
    wanted = [f"r{i}" for i in range(0, 1300, 2)] + ["r0"]  # many ids, some missing, one repeated
    found = await store.profiles.get_many(wanted)
    assert set(found) == {f"r{i}" for i in range(0, 1200, 2)}
    assert found["r4"] == Profile("r4", b"{}", 1, NOW)
    assert await store.profiles.get_many([]) == {}


async def test_fetch_and_lookup_answer_on_the_event_loop(store: Store) -> None:
    await store.profiles.upsert_many([("r1", b"{}")])
    answers: asyncio.Queue[Profile | StoreError | None] = asyncio.Queue()
    store.profiles.fetch("r1", answers.put_nowait)
    store.profiles.fetch("nobody", answers.put_nowait)
    got = [await answers.get(), await answers.get()]
    assert sorted(got, key=repr) == sorted([Profile("r1", b"{}", 1, NOW), None], key=repr)
    assert await store.profiles.lookup("r1") == Profile("r1", b"{}", 1, NOW)


async def test_concurrent_lookups_share_queries(store: Store) -> None:
    await store.profiles.upsert_many([(f"r{i}", b"{}") for i in range(100)])
    stats = store.profiles.read_stats
    batches, keys = stats.batches, stats.keys
    ids = [f"r{i % 120}" for i in range(600)]  # repeats and 20 missing ids
    results = await asyncio.gather(*(store.profiles.get(rid) for rid in ids))
    assert [r is not None for r in results] == [int(rid[1:]) < 100 for rid in ids]
    assert stats.batches - batches <= 2 and stats.keys - keys == 120  # each distinct id asked once


async def test_a_closed_store_fails_with_store_error(closed_store: Store) -> None:
    profiles = closed_store.profiles
    for call in (
        lambda: profiles.get("r1"),
        lambda: profiles.get_many(["r1"]),
        lambda: profiles.upsert_many([("r1", b"{}")]),
        profiles.count,
        profiles.ping,
    ):
        with pytest.raises(StoreError):
            await call()
    answers: asyncio.Queue[Profile | StoreError | None] = asyncio.Queue()
    profiles.fetch("r1", answers.put_nowait)
    assert isinstance(await answers.get(), StoreError)
