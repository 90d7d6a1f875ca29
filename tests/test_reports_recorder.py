"""The exposure recorder: ``record`` never waits (not even while a flush waits for the store), the
buffer is bounded and drops are counted, sampling keeps the share it is told (seeded), and a flush
the store refuses is kept for the next one.

Crash safety is by design, not tested here: what is in the buffer when the process dies (at most
``exposure_flush_seconds`` of exposures) is lost; exposures are statistics, never acknowledged data.
"""

from __future__ import annotations

import asyncio
import inspect
import random
import sqlite3
import time
from pathlib import Path

import pytest

from app.decisions.exposure import Event, Exposure
from app.reports.recorder import ExposureRecorder, running_recorder
from app.store import open_store
from app.store.base import StoreError

pytestmark = pytest.mark.anyio
AT = 1_714_557_600.0


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def exposure(variant: str = "a", event: Event = "open", at: float = AT) -> Exposure:
    return Exposure("demo", "hello", variant, "subject", "direct", "ok", "list", event, at)


def test_record_is_a_plain_call_and_the_buffer_is_bounded() -> None:
    recorder = ExposureRecorder(capacity=1000)
    assert not inspect.iscoroutinefunction(recorder.record)
    for _ in range(1500):
        recorder.record(exposure())
    assert recorder.buffered == 1000
    assert (recorder.stats.recorded, recorder.stats.dropped) == (1000, 500)


def test_sampling_keeps_the_share_of_opens_it_is_told_and_every_click() -> None:
    recorder = ExposureRecorder(capacity=100_000, sample_rate=0.3, rng=random.Random(20260501).random)
    for _ in range(20_000):
        recorder.record(exposure())
    for _ in range(500):
        recorder.record(exposure(event="click"))
    kept_opens = recorder.stats.recorded - 500
    # Binomial(20000, 0.3): sd = sqrt(20000 * 0.3 * 0.7) = 64.8; 4 sd either side.
    assert abs(kept_opens - 6000) < 260
    assert recorder.stats.sampled_out == 20_000 - kept_opens
    assert ExposureRecorder(10, sample_rate=0.0).record(exposure()) is None


async def test_record_returns_at_once_while_a_flush_waits_for_the_store(tmp_path: Path) -> None:
    path = tmp_path / "x.db"
    store = open_store(f"sqlite:///{path}")
    await store.open()
    blocker = sqlite3.connect(path, isolation_level=None)
    try:
        recorder = ExposureRecorder(capacity=10_000)
        for _ in range(100):
            recorder.record(exposure("a"))
        blocker.execute("BEGIN IMMEDIATE")  # another process holds the write lock: the flush waits
        flush = asyncio.create_task(recorder.flush(store.exposures))
        await asyncio.sleep(0.2)
        assert not flush.done()
        started = time.perf_counter()
        for _ in range(5000):
            recorder.record(exposure("b"))
        assert time.perf_counter() - started < 0.1  # 5,000 records: no waiting on the store
        blocker.execute("COMMIT")
        assert await flush == 1
        assert await recorder.flush(store.exposures) == 1
        rows = {r.variant: r.recorded for r in await store.exposures.read("demo", None, None)}
        assert rows == {"a": 100, "b": 5000}
    finally:
        blocker.close()
        await store.close()


async def test_a_refused_flush_is_kept_and_added_to_the_next(tmp_path: Path) -> None:
    store = open_store(f"sqlite:///{tmp_path / 'x.db'}")
    recorder = ExposureRecorder(capacity=100)
    for _ in range(3):
        recorder.record(exposure())
    with pytest.raises(StoreError):
        await recorder.flush(store.exposures)  # not open: refused
    assert recorder.stats.flush_failures == 1
    recorder.record(exposure())
    await store.open()
    try:
        assert await recorder.flush(store.exposures) == 1
        [row] = await store.exposures.read("demo", None, None)
        assert (row.recorded, row.weight) == (4, 4.0)
        assert recorder.stats.flushed_rows == 1
    finally:
        await store.close()


async def test_the_background_flush_runs_periodically_and_once_more_on_the_way_out(tmp_path: Path) -> None:
    store = open_store(f"sqlite:///{tmp_path / 'x.db'}")
    await store.open()
    try:
        recorder = ExposureRecorder(capacity=100)
        async with running_recorder(recorder, store.exposures, 0.05):
            recorder.record(exposure("a"))
            for _ in range(100):
                await asyncio.sleep(0.02)
                if recorder.stats.flushed_rows:
                    break
            assert [r.variant for r in await store.exposures.read("demo", None, None)] == ["a"]
            recorder.record(exposure("b"))
        # Left the block at once: the last flush wrote "b" before returning.
        assert [r.variant for r in await store.exposures.read("demo", None, None)] == ["a", "b"]
    finally:
        await store.close()


async def test_a_large_flush_yields_to_the_event_loop_while_it_adds_up(tmp_path: Path) -> None:
    store = open_store(f"sqlite:///{tmp_path / 'x.db'}")
    await store.open()
    try:
        recorder = ExposureRecorder(capacity=50_000)
        for n in range(20_000):
            recorder.record(exposure("a" if n % 2 else "b"))
        seen: set[int] = set()

        async def watcher() -> None:
            while True:
                seen.add(recorder.adding)
                await asyncio.sleep(0)

        task = asyncio.create_task(watcher())
        await asyncio.sleep(0)
        assert await recorder.flush(store.exposures) == 2
        task.cancel()
        # 20,000 exposures in chunks of 4,096: another task ran while 15,904, 11,808, ... were left.
        assert {15_904, 11_808, 7_712, 3_616} <= seen
        rows = {r.variant: r.recorded for r in await store.exposures.read("demo", None, None)}
        assert rows == {"a": 10_000, "b": 10_000}
    finally:
        await store.close()
