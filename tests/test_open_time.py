"""Budget, coalescing and negative caching of the open-time lookup, on a real SQLite store."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import replace
from pathlib import Path

import orjson
import pytest

from app.campaigns.loader import Campaign, load_campaigns
from app.config import PROJECT_ROOT
from app.content.cache import BoundedCache
from app.content.lists import Entry, Key, ListContent, Rendered, entry_size
from app.content.profiles import ProfileLoader
from app.demo import demo_rows, recipient_id
from app.store import open_store
from app.store.base import Profile, ProfileRepository, StoreError


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class GatedStore:
    """Wraps the real store: holds every lookup until ``gate`` opens, and counts them."""

    def __init__(self, inner: ProfileRepository) -> None:
        self.inner = inner
        self.gate = asyncio.Event()
        self.gets = 0
        self.tasks: set[asyncio.Task[None]] = set()

    async def get(self, recipient_id: str) -> Profile | None:
        self.gets += 1
        await self.gate.wait()
        return await self.inner.get(recipient_id)

    def fetch(
        self,
        recipient_id: str,
        callback: Callable[[Profile | StoreError | None], None],
        wanted: Callable[[], bool] | None = None,
    ) -> None:
        async def run() -> None:
            try:
                callback(await self.get(recipient_id))
            except StoreError as exc:
                callback(exc)

        self.tasks.add(asyncio.ensure_future(run()))

    async def get_many(self, recipient_ids: Sequence[str]) -> dict[str, Profile]:
        return await self.inner.get_many(recipient_ids)


@pytest.fixture
def demo() -> Campaign:
    return load_campaigns(
        PROJECT_ROOT / "amp_templates",
        PROJECT_ROOT / "static",
        default_budget_ms=50,
        public_base_url="https://amp.example.com",
    )["demo"]


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[GatedStore]:
    real = open_store(f"sqlite:///{tmp_path / 'p.db'}")
    await real.open()
    await real.upsert_many(list(demo_rows(5)))
    yield GatedStore(real)
    await real.close()


def content(store: GatedStore) -> ListContent:
    cache: BoundedCache[Key, Entry] = BoundedCache(1 << 20, size_of=entry_size)
    loader = ProfileLoader(store)  # type: ignore[arg-type]  # the gated wrapper has what it uses
    return ListContent(loader, cache, ttl_seconds=60, negative_ttl_seconds=30)


@pytest.mark.anyio
async def test_late_data_gets_fallback_then_next_open_is_fresh(store: GatedStore, demo: Campaign) -> None:
    lists = content(store)
    picks = demo.lists["picks"]
    late = await lists.load("demo", picks, recipient_id(1))
    assert late == "budget-exceeded"  # the route serves the block's fallback with this reason
    store.gate.set()
    await asyncio.sleep(0.05)  # the lookup finishes in the background
    fresh = lists.cached("demo", picks, recipient_id(1))
    assert isinstance(fresh, Rendered)
    assert len(orjson.loads(fresh.body)["items"]) == 4


@pytest.mark.anyio
async def test_concurrent_opens_share_one_lookup(store: GatedStore, demo: Campaign) -> None:
    lists = content(store)
    picks = demo.lists["picks"]
    waiting = [asyncio.ensure_future(lists.load("demo", picks, recipient_id(2))) for _ in range(20)]
    await asyncio.sleep(0)
    store.gate.set()
    outcomes = await asyncio.gather(*waiting)
    assert store.gets == 1
    assert all(isinstance(o, Rendered) for o in outcomes)
    assert {o.body for o in outcomes if isinstance(o, Rendered)} == {outcomes[0].body}  # type: ignore[union-attr]


@pytest.mark.anyio
async def test_unknown_recipient_is_negatively_cached(store: GatedStore, demo: Campaign) -> None:
    store.gate.set()
    lists = content(store)
    picks = demo.lists["picks"]
    first = await lists.load("demo", picks, "ghost")
    again = lists.cached("demo", picks, "ghost")
    assert first == again == "unknown-recipient"
    assert store.gets == 1


@pytest.mark.anyio
async def test_shutdown_cancels_background_lookups(store: GatedStore, demo: Campaign) -> None:
    lists = content(store)
    await lists.load("demo", demo.lists["picks"], recipient_id(3))
    await lists.aclose()
    assert lists.cached("demo", demo.lists["picks"], recipient_id(3)) is None


@pytest.mark.anyio
async def test_a_failing_render_still_answers_every_waiter(store: GatedStore, demo: Campaign) -> None:
    store.gate.set()
    lists = content(store)
    # A block whose shaping raises (a field spec that is not one) stands for any unexpected error.
    picks = demo.lists["picks"]
    bad_field = replace(picks.fields[0], max_length=None)  # type: ignore[arg-type]
    bad_block = replace(picks, fields=(bad_field,))
    outcome = await lists.load("demo", bad_block, recipient_id(1))
    assert outcome == "internal-error"
    good = await lists.load("demo", demo.lists["picks"], recipient_id(2))
    assert isinstance(good, Rendered)
