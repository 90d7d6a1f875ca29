"""Image renders in worker processes behind a bound: where they run, what a full queue answers, and
that a render whose requester already got the fallback still serves the next open."""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from app.content.images import ImageContent, ImageRequest
from app.content.render_pool import RenderPool, processes_for
from app.images import render
from app.images.layout import ImageBlock, RenderJob, prepare
from tests.test_images_helpers import GREETING, campaign, decode

Lookup = tuple[dict[str, Any] | None, str | None]
pytestmark = pytest.mark.anyio
NAMES = [f"Name{i}" for i in range(40)]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def profile(recipient: str, budget_s: float) -> Lookup:
    """Each recipient ``rN`` is ``NameN``: a distinct image (content key) per recipient."""
    return {"first_name": f"Name{recipient[1:]}"}, None


def greeting(root: Path, budget_ms: int = 500) -> ImageBlock:
    return campaign(root, GREETING.replace("budget_ms = 500", f"budget_ms = {budget_ms}")).images["hello"]


def ask(block: ImageBlock, recipient: str, scale: int = 1) -> ImageRequest:
    return ImageRequest("imgs", block, recipient, "png", scale, "direct")


@pytest.fixture
def processes() -> Iterator[list[RenderPool]]:
    made: list[RenderPool] = []
    yield made
    for pool in made:
        pool.close()


async def in_processes(
    made: list[RenderPool], block: ImageBlock, count: int, limit: int, backlog: int = 0
) -> ImageContent:
    """Render processes started and warmed, as the server's lifespan does before it is ready."""
    pool = RenderPool.in_processes(count, limit=limit, backlog=backlog)
    made.append(pool)
    await pool.warm(render.draw, prepare(block, {"profile": {}}, "png", 1).job)
    return ImageContent(profile, render_pool=pool)


async def test_renders_run_in_worker_processes_with_the_same_pixels(
    tmp_path: Path, processes: list[RenderPool]
) -> None:
    block = greeting(tmp_path)
    content = await in_processes(processes, block, 2, limit=8)
    served = await asyncio.gather(*(content.serve(ask(block, f"r{i}")) for i in range(6)))
    assert all(s.fallback_reason is None for s in served)
    pids = content.render_pool.pids
    assert pids and os.getpid() not in pids and len(pids) <= 2
    # The worker's bytes show what drawing here shows: the recipient's name, not the fallback's.
    here = render.render(prepare(block, {"profile": {"first_name": "Name3"}}, "png", 1))
    assert decode(served[3].body).tobytes() == decode(here).tobytes()
    assert decode(served[3].body).tobytes() != decode(block.fallbacks["png", 1]).tobytes()


async def test_a_render_whose_requester_got_the_fallback_lands_in_the_cache(
    tmp_path: Path, processes: list[RenderPool]
) -> None:
    block = greeting(tmp_path, budget_ms=1)  # no render crosses to a process and back in 1 ms
    content = await in_processes(processes, block, 1, limit=8)
    late = await content.serve(ask(block, "r7", scale=2))
    assert late.fallback_reason == "budget-exceeded" and late.body == block.fallbacks["png", 2]
    for _ in range(500):  # the render goes on without anyone waiting for it
        if not content.renders_pending:
            break
        await asyncio.sleep(0.01)
    for _ in range(20):  # a 1 ms budget: a busy machine can delay even a cached answer's lookup past it
        again = await content.serve(ask(block, "r7", scale=2))
        if again.fallback_reason != "budget-exceeded":
            break
    assert again.fallback_reason is None and content.renders == 1  # served from the cache, never redrawn
    personal, fallback = decode(again.body), decode(block.fallbacks["png", 2]).convert("RGB")
    assert personal.size == fallback.size == (600, 200)
    assert personal.convert("RGB").tobytes() != fallback.tobytes()
    here = render.render(prepare(block, {"profile": {"first_name": "Name7"}}, "png", 2))
    assert personal.tobytes() == decode(here).tobytes()


def gated_content(limit: int, backlog: int) -> tuple[ImageContent, RenderPool, threading.Event]:
    """Two render threads held at a gate (set it to let renders finish)."""
    gate = threading.Event()

    def gated(job: RenderJob) -> bytes:
        gate.wait(5)
        return render.draw(job)

    pool = RenderPool(ThreadPoolExecutor(2), workers=2, limit=limit, backlog=backlog)
    return ImageContent(profile, renderer=gated, render_pool=pool), pool, gate


async def settled(content: ImageContent) -> None:
    pool = content.render_pool
    for _ in range(500):
        if not (pool.depth or pool.backlog or content.renders_pending):
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"renders still running: depth {pool.depth}, backlog {pool.backlog}")


async def test_a_full_queue_answers_at_once_and_the_bound_holds(tmp_path: Path) -> None:
    content, pool, gate = gated_content(limit=3, backlog=100)
    block = greeting(tmp_path)
    try:
        tasks = [asyncio.ensure_future(content.serve(ask(block, f"r{i}"))) for i in range(10)]
        for _ in range(5):
            await asyncio.sleep(0)
        # Renders are held at the gate: three admitted, the seven others answered already and kept
        # for later (none started: both render threads are busy).
        refused = [t for t in tasks if t.done()]
        assert len(refused) == 7 and pool.depth == pool.peak == 3 and pool.shed == 7
        assert pool.backlog == 7 and content.renders == 3
        for task in refused:
            served = task.result()
            assert (served.body, served.fallback_reason) == (block.fallbacks["png", 1], "render-queue-full")
        gate.set()
        admitted = await asyncio.gather(*(t for t in tasks if t not in refused))
        assert all(s.fallback_reason is None for s in admitted)
        await settled(content)
        assert pool.peak == 3 and content.renders == 10
        # The refused recipients' images were rendered meanwhile: their next opens are personal,
        # from the cache (no render), and show their own name, not the fallback's text.
        for task in refused:
            recipient = f"r{tasks.index(task)}"
            again = await content.serve(ask(block, recipient))
            expected = prepare(block, {"profile": {"first_name": f"Name{recipient[1:]}"}}, "png", 1)
            assert again.fallback_reason is None
            assert decode(again.body).tobytes() == decode(render.render(expected)).tobytes()
        assert content.renders == 10
    finally:
        gate.set()
        content.close()


async def test_a_full_backlog_drops_its_oldest_renders(tmp_path: Path) -> None:
    content, pool, gate = gated_content(limit=2, backlog=3)
    block = greeting(tmp_path)
    try:
        tasks = [asyncio.ensure_future(content.serve(ask(block, f"r{i}"))) for i in range(10)]
        for _ in range(5):
            await asyncio.sleep(0)
        assert pool.shed == 8 and pool.backlog == 3 and pool.dropped == 5
        gate.set()
        await asyncio.gather(*tasks)
        await settled(content)
        assert content.renders == 2 + 3  # the admitted two and the three newest refused
        kept = await content.serve(ask(block, "r9"))
        assert kept.fallback_reason is None and content.renders == 5
        dropped = await content.serve(ask(block, "r2"))  # dropped from the backlog: renders now
        assert dropped.fallback_reason is None and content.renders == 6
    finally:
        gate.set()
        content.close()


async def test_a_burst_never_queues_past_the_bound_in_processes(
    tmp_path: Path, processes: list[RenderPool]
) -> None:
    block = greeting(tmp_path)
    content = await in_processes(processes, block, 2, limit=4, backlog=100)
    served = await asyncio.gather(*(content.serve(ask(block, f"r{i}")) for i in range(len(NAMES))))
    pool = content.render_pool
    reasons = [s.fallback_reason for s in served]
    assert reasons.count("render-queue-full") == pool.shed == len(NAMES) - 4
    assert reasons.count(None) == 4
    await settled(content)
    assert pool.peak == 4 and content.renders == len(NAMES)  # the refused ones too, afterwards
    again = await asyncio.gather(*(content.serve(ask(block, f"r{i}")) for i in range(len(NAMES))))
    assert all(s.fallback_reason is None for s in again) and content.renders == len(NAMES)
    assert pool.peak == 4


def test_render_processes_default_to_the_cpus_shared_among_workers() -> None:
    cpus = len(os.sched_getaffinity(0))
    assert processes_for(3, 1) == 3
    assert processes_for(0, 1) == cpus
    assert processes_for(0, 2) == max(1, cpus // 2)
    assert processes_for(0, cpus * 4) == 1


async def test_a_render_that_would_finish_past_the_budget_is_refused_at_once(tmp_path: Path) -> None:
    def slow(job: RenderJob) -> bytes:
        time.sleep(0.1)
        return render.draw(job)

    pool = RenderPool(ThreadPoolExecutor(1), workers=1, limit=32, backlog=100)
    content = ImageContent(profile, renderer=slow, render_pool=pool)
    block = greeting(tmp_path, budget_ms=250)
    try:
        first = await content.serve(ask(block, "r0"))  # renders take ~0.1 s: now the pool knows
        assert first.fallback_reason is None and 0.1 <= pool.render_s < 0.12
        started = time.monotonic()
        served = await asyncio.gather(*(content.serve(ask(block, f"r{i}")) for i in range(1, 6)))
        # One render at a time: the second waits for the first (0.2 s in all), a third would end
        # at ~0.3 s, past the 0.25 s budget: refused at once, not queued to be late.
        reasons = [s.fallback_reason for s in served]
        assert reasons == [None, None, "render-queue-full", "render-queue-full", "render-queue-full"]
        assert pool.shed_by == {"queue-full": 0, "too-late": 3}
        assert time.monotonic() - started < 0.25
    finally:
        content.close()
