"""FormRepository contract: answers stored once, profile updates stamped like event fields."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from app.store.base import Saved, Store, StoreError, Submission
from tests.contract.conftest import NOW, event

pytestmark = pytest.mark.anyio


def submission(answer: str, recipient: str = "r1") -> Submission:
    return Submission(
        submission_id=f"sub-{recipient}-{answer}",
        campaign="demo",
        block="rate",
        recipient_id=recipient,
        payload=orjson.dumps({"rating": answer}),
        profile_updates=((("prefs", "rating"), answer),),
    )


async def attributes(store: Store, recipient: str = "r1") -> Any:
    profile = await store.profiles.get(recipient)
    return None if profile is None else orjson.loads(profile.attributes)


async def test_an_answer_is_stored_once_and_updates_the_profile(store: Store) -> None:
    assert await store.forms.save(submission("4"), NOW) == Saved(duplicate=False, profile_changed=True)
    assert await attributes(store) == {"prefs": {"rating": "4"}}
    assert await store.forms.save(submission("4"), NOW + 1) == Saved(duplicate=True, profile_changed=False)
    profile = await store.profiles.get("r1")
    assert profile is not None and profile.version == 1


async def test_the_latest_answer_counts(store: Store) -> None:
    await store.profiles.upsert_many([("r1", b'{"name":"Ada"}')])
    await store.forms.save(submission("A"), NOW)
    await store.forms.save(submission("B"), NOW + 1)
    assert await store.forms.save(submission("A"), NOW + 2) == Saved(duplicate=True, profile_changed=True)
    assert await attributes(store) == {"name": "Ada", "prefs": {"rating": "A"}}


async def test_a_form_answer_and_events_resolve_by_time(store: Store) -> None:
    await store.forms.save(submission("4"), NOW)
    older = event("older", at="2024-05-01T09:00:00Z", prefs={"rating": "1"})
    assert await store.events.commit([older], NOW) == ["applied"]
    assert await attributes(store) == {"prefs": {"rating": "4"}}  # the answer is newer
    newer = event("newer", at="2024-05-01T10:30:00Z", prefs={"rating": "2"})
    await store.events.commit([newer], NOW)
    assert await attributes(store) == {"prefs": {"rating": "2"}}


@pytest.mark.parametrize("stored", [b"[1]", b'{"prefs": "not an object"}'])
async def test_an_unusable_profile_is_left_alone_but_the_answer_kept(store: Store, stored: bytes) -> None:
    await store.profiles.upsert_many([("r1", stored)])
    assert await store.forms.save(submission("4"), NOW) == Saved(duplicate=False, profile_changed=False)
    assert await store.forms.save(submission("4"), NOW) == Saved(duplicate=True, profile_changed=False)
    profile = await store.profiles.get("r1")
    assert profile is not None and profile.attributes == stored


async def test_a_closed_store_fails_with_store_error(closed_store: Store) -> None:
    with pytest.raises(StoreError):
        await closed_store.forms.save(submission("4"), NOW)
