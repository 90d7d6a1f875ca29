"""Image renders in worker processes behind a bound: where they run, what a full queue answers, and
that a render whose requester already got the fallback still serves the next open."""

from __future__ import annotations

import asyncio
import os
import threading
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


def in_processes(made: list[RenderPool], count: int, limit: int) -> ImageContent:
    pool = RenderPool.in_processes(count, limit=limit)
    made.append(pool)
    return ImageContent(profile, render_pool=pool)


async def test_renders_run_in_worker_processes_with_the_same_pixels(
    tmp_path: Path, processes: list[RenderPool]
) -> None:
    content = in_processes(processes, 2, limit=8)
    block = greeting(tmp_path)
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
    content = in_processes(processes, 1, limit=8)
    block = greeting(tmp_path, budget_ms=1)  # no render crosses to a process and back in 1 ms
    late = await content.serve(ask(block, "r7", scale=2))
    assert late.fallback_reason == "budget-exceeded" and late.body == block.fallbacks["png", 2]
    for _ in range(500):  # the render goes on without anyone waiting for it
        if not content.renders_pending:
            break
        await asyncio.sleep(0.01)
    again = await content.serve(ask(block, "r7", scale=2))
    assert again.fallback_reason is None and content.renders == 1
    personal, fallback = decode(again.body), decode(block.fallbacks["png", 2]).convert("RGB")
    assert personal.size == fallback.size == (600, 200)
    assert personal.convert("RGB").tobytes() != fallback.tobytes()
    here = render.render(prepare(block, {"profile": {"first_name": "Name7"}}, "png", 2))
    assert personal.tobytes() == decode(here).tobytes()


async def test_a_full_queue_answers_at_once_and_the_bound_holds(tmp_path: Path) -> None:
    gate = threading.Event()

    def gated(job: RenderJob) -> bytes:
        gate.wait(5)
        return render.draw(job)

    pool = RenderPool(ThreadPoolExecutor(2), workers=2, limit=3)
    content = ImageContent(profile, renderer=gated, render_pool=pool)
    block = greeting(tmp_path)
    try:
        tasks = [asyncio.ensure_future(content.serve(ask(block, f"r{i}"))) for i in range(10)]
        for _ in range(5):
            await asyncio.sleep(0)
        # Renders are held at the gate: three admitted, the seven others answered already.
        refused = [t for t in tasks if t.done()]
        assert len(refused) == 7 and pool.depth == pool.peak == 3 and pool.shed == 7
        for task in refused:
            served = task.result()
            assert (served.body, served.fallback_reason) == (block.fallbacks["png", 1], "render-queue-full")
        gate.set()
        admitted = await asyncio.gather(*(t for t in tasks if t not in refused))
        assert all(s.fallback_reason is None for s in admitted) and pool.peak == 3
        # A refused open kept nothing: the recipient's next open renders their image.
        retry = await content.serve(ask(block, f"r{tasks.index(refused[0])}"))
        assert retry.fallback_reason is None and retry.body != block.fallbacks["png", 1]
    finally:
        gate.set()
        content.close()


async def test_a_burst_never_queues_past_the_bound_in_processes(
    tmp_path: Path, processes: list[RenderPool]
) -> None:
    content = in_processes(processes, 2, limit=4)
    block = greeting(tmp_path)
    served = await asyncio.gather(*(content.serve(ask(block, f"r{i}")) for i in range(len(NAMES))))
    pool = content.render_pool
    reasons = [s.fallback_reason for s in served]
    assert pool.peak == 4 and pool.depth == 0
    assert reasons.count(None) == content.renders >= 4
    assert reasons.count("render-queue-full") == pool.shed == len(NAMES) - content.renders


def test_render_processes_default_to_the_cpus_shared_among_workers() -> None:
    cpus = len(os.sched_getaffinity(0))
    assert processes_for(3, 1) == 3
    assert processes_for(0, 1) == cpus
    assert processes_for(0, 2) == max(1, cpus // 2)
    assert processes_for(0, cpus * 4) == 1
