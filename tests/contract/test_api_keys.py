"""ApiKeyRepository contract: ids never overwritten, listing order, revocation kept once."""

from __future__ import annotations

import pytest

from app.store.base import ApiKeyRecord, Store, StoreError

pytestmark = pytest.mark.anyio


def record(key_id: str, created_at: float = 100.0, name: str = "esp") -> ApiKeyRecord:
    return ApiKeyRecord(key_id, name, frozenset({"render", "tokens"}), created_at, None, b"\x00hash" * 6)


async def test_round_trip_and_unknown_ids(store: Store) -> None:
    assert await store.api_keys.insert(record("0123abcd"))
    assert await store.api_keys.find("0123abcd") == record("0123abcd")
    assert await store.api_keys.find("ffffffff") is None


async def test_a_taken_id_is_refused_and_the_first_key_kept(store: Store) -> None:
    assert await store.api_keys.insert(record("0123abcd", name="first"))
    assert not await store.api_keys.insert(record("0123abcd", name="second"))
    assert await store.api_keys.all() == [record("0123abcd", name="first")]


async def test_all_lists_oldest_first_then_by_id(store: Store) -> None:
    for key_id, created_at in [("cccccccc", 1.0), ("bbbbbbbb", 2.0), ("aaaaaaaa", 2.0)]:
        await store.api_keys.insert(record(key_id, created_at))
    assert [r.key_id for r in await store.api_keys.all()] == ["cccccccc", "aaaaaaaa", "bbbbbbbb"]


async def test_revoke_keeps_the_first_time(store: Store) -> None:
    await store.api_keys.insert(record("0123abcd"))
    assert await store.api_keys.revoke("0123abcd", 200.0) == record("0123abcd")._replace(revoked_at=200.0)
    again = await store.api_keys.revoke("0123abcd", 300.0)
    assert again is not None and again.revoked_at == 200.0
    assert await store.api_keys.find("0123abcd") == again
    assert await store.api_keys.revoke("ffffffff", 300.0) is None


async def test_a_closed_store_fails_with_store_error(closed_store: Store) -> None:
    with pytest.raises(StoreError):
        await closed_store.api_keys.find("0123abcd")
    with pytest.raises(StoreError):
        await closed_store.api_keys.insert(record("0123abcd"))
