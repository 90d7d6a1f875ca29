"""PrivacyRepository contract: erasure removes every row of one recipient and records it without the
id; export returns what is stored; retention deletes by age in batches; one claim per period."""

from __future__ import annotations

import asyncio

import orjson
import pytest

from app.store import open_store
from app.store.base import Erasure, Store, StoreError, Submission
from tests.contract.conftest import NOW, event

pytestmark = pytest.mark.anyio

DAY = 86400.0


def record(erasure_id: str = "e1", id_hash: bytes = b"h" * 32, at: float = NOW) -> Erasure:
    return Erasure(erasure_id, id_hash, at, "key12345", 0, 0, 0)


def answer(recipient: str, value: str) -> Submission:
    return Submission(f"sub-{recipient}-{value}", "demo", "rate", recipient, orjson.dumps({"rating": value}))


async def fill(store: Store, recipient: str, at: float = NOW) -> None:
    """A profile, two applied events and one form answer for ``recipient``."""
    await store.events.commit([event(f"{recipient}-a", recipient), event(f"{recipient}-b", recipient)], at)
    await store.forms.save(answer(recipient, "5"), at)


async def test_erase_removes_profile_events_and_answers_of_that_recipient_only(store: Store) -> None:
    await fill(store, "r1")
    await fill(store, "r2")
    stored = await store.privacy.erase("r1", record())
    assert stored == record()._replace(profiles=1, events=2, form_answers=1)
    assert await store.profiles.get("r1") is None
    gone = await store.privacy.export("r1")
    assert (gone.profile, gone.events, gone.form_answers) == (None, [], [])
    kept = await store.privacy.export("r2")
    assert kept.profile is not None and len(kept.events) == 2 and len(kept.form_answers) == 1
    assert await store.privacy.erasures(b"h" * 32) == [stored]


async def test_erasing_an_unknown_recipient_records_zero_counts(store: Store) -> None:
    assert await store.privacy.erase("nobody", record()) == record()
    again = await store.privacy.erase("nobody", record("e2", at=NOW + 1))
    assert [r.erasure_id for r in await store.privacy.erasures(b"h" * 32)] == ["e1", again.erasure_id]
    assert await store.privacy.erasures(b"x" * 32) == []


async def test_an_erased_event_id_is_new_data_when_sent_again(store: Store) -> None:
    await fill(store, "r1")
    await store.privacy.erase("r1", record())
    assert await store.events.commit([event("r1-a", "r1")], NOW + 1) == ["applied"]
    profile = await store.profiles.get("r1")
    assert profile is not None and orjson.loads(profile.attributes) == {"n": "r1-a"}


async def test_export_returns_what_is_stored(store: Store) -> None:
    await store.profiles.upsert_many([("r1", b'{"name":"Ada"}')])
    await fill(store, "r1", NOW + 5)
    data = await store.privacy.export("r1")
    assert data.profile is not None
    assert orjson.loads(data.profile.attributes) == {"name": "Ada", "n": "r1-b"}
    assert set(orjson.loads(data.profile.field_times)) == {"n"}
    assert data.profile.version == 2
    assert [(e.id, e.type, e.received_at) for e in data.events] == [
        ("r1-a", "profile.updated", NOW + 5),
        ("r1-b", "profile.updated", NOW + 5),
    ]
    assert data.events[0].occurred_at.startswith("2024-05-01T09:00:00")
    [stored] = data.form_answers
    assert (stored.campaign, stored.block, orjson.loads(stored.payload), stored.created_at) == (
        "demo",
        "rate",
        {"rating": "5"},
        NOW + 5,
    )


async def test_the_record_key_is_made_once(store: Store) -> None:
    first = await store.privacy.record_key(b"a" * 32)
    assert first == b"a" * 32
    assert await store.privacy.record_key(b"b" * 32) == first


async def test_expire_deletes_old_rows_in_batches_and_keeps_new_ones(store: Store) -> None:
    old = [event(f"old-{n}", f"r{n}") for n in range(5)]
    await store.events.commit(old, NOW - 40 * DAY)
    await store.events.commit([event("new", "r1")], NOW - 10 * DAY)
    await store.forms.save(answer("r1", "old"), NOW - 40 * DAY)
    await store.forms.save(answer("r1", "new"), NOW)
    before = NOW - 30 * DAY
    assert [await store.privacy.expire("events", before, 2) for _ in range(4)] == [2, 2, 1, 0]
    assert await store.privacy.expire("form_submissions", before, 10) == 1
    assert [e.id for e in (await store.privacy.export("r1")).events] == ["new"]
    assert [a.submission_id for a in (await store.privacy.export("r1")).form_answers] == ["sub-r1-new"]


async def test_a_period_is_claimed_once(store: Store) -> None:
    assert await store.privacy.claim("retention", NOW, 3600)
    assert not await store.privacy.claim("retention", NOW + 100, 3600)
    assert await store.privacy.claim("other", NOW + 100, 3600)
    assert await store.privacy.claim("retention", NOW + 3600, 3600)


async def test_a_closed_store_fails_with_store_error(closed_store: Store) -> None:
    with pytest.raises(StoreError):
        await closed_store.privacy.erase("r1", record())
    with pytest.raises(StoreError):
        await closed_store.privacy.export("r1")
    with pytest.raises(StoreError):
        await closed_store.privacy.expire("events", NOW, 10)


async def test_processes_claiming_together_get_one_claim(store: Store, database_url: str) -> None:
    others = [open_store(database_url) for _ in range(3)]
    for other in others:
        await other.open()
    try:
        won = await asyncio.gather(*(s.privacy.claim("retention", NOW, 3600) for s in [store, *others] * 3))
    finally:
        for other in others:
            await other.close()
    assert sorted(won) == [False] * 11 + [True]
