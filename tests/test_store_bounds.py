"""The bound on queued profile reads and the dropping of reads nobody waits for, on a real SQLite store
(``app.store.batching``, shared by every backend; the server test drives it with PostgreSQL hung)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

from app.demo import demo_rows, recipient_id
from app.store import open_store
from app.store.base import Profile, StoreBusy, StoreError
from app.store.batching import LookupResult

Results = dict[str, list[LookupResult]]


def _collect(results: Results, recipient: str) -> Callable[[LookupResult], None]:
    return lambda result: results.setdefault(recipient, []).append(result)


def _saying(answer: bool | None) -> Callable[[], bool] | None:
    return None if answer is None else (lambda: answer)


async def _lookups(
    path: Path, plan: list[tuple[str, bool | None]], bound: int
) -> tuple[Results, int, dict[str, int]]:
    store = open_store(f"sqlite:///{path}")
    await store.open()
    try:
        await store.profiles.upsert_many(list(demo_rows(5)))
        store.profiles.max_pending = bound
        results: Results = {}
        for recipient, wanted in plan:  # all in one loop tick: one job, sent on the next
            store.profiles.fetch(recipient, _collect(results, recipient), _saying(wanted))
            assert store.profiles.depth <= bound
        await asyncio.sleep(0.2)
        return results, store.profiles.read_stats.keys, dict(store.profiles.shed)
    finally:
        await store.close()


def test_past_the_bound_a_new_recipient_is_refused_at_once(tmp_path: Path) -> None:
    one, two, three = recipient_id(1), recipient_id(2), recipient_id(3)
    plan = [(one, True), (two, True), (one, True), (three, True)]  # a second lookup of one joins
    results, read, shed = asyncio.run(_lookups(tmp_path / "p.db", plan, bound=2))
    assert [type(r) for r in results[one]] == [Profile, Profile] and isinstance(results[two][0], Profile)
    assert len(results[three]) == 1 and isinstance(results[three][0], StoreBusy)
    assert read == 2 and shed == {"full": 1, "abandoned": 0}


def test_a_queued_read_nobody_waits_for_is_not_sent(tmp_path: Path) -> None:
    gone, mixed, unsaid = recipient_id(1), recipient_id(2), recipient_id(3)
    plan = [(gone, False), (gone, False), (mixed, False), (mixed, True), (unsaid, None)]
    results, read, shed = asyncio.run(_lookups(tmp_path / "p.db", plan, bound=10))
    # Every lookup is answered once; only the one whose every waiter said "gone" is dropped.
    assert [type(r) for r in results[gone]] == [StoreBusy, StoreBusy]
    assert all(not isinstance(r, StoreError) for r in results[mixed] + results[unsaid])
    assert read == 2 and shed == {"full": 0, "abandoned": 1}
