"""The image content service: content-key cache, coalescing, worker threads, budget and last good render."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from app.content.images import ImageContent, ImageRequest
from app.images import render
from app.images.layout import ImageBlock, RenderJob
from tests.test_images_helpers import GREETING, campaign, decode

Lookup = tuple[dict[str, Any] | None, str | None]
pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class Profiles:
    """An in-memory profile lookup with the store's (attributes, reason) contract."""

    def __init__(self) -> None:
        self.data: dict[str, dict[str, Any]] = {"r1": {"first_name": "Ada"}, "r2": {"first_name": "Ada"}}
        self.down = False
        self.calls = 0

    async def __call__(self, recipient: str, budget_s: float) -> Lookup:
        self.calls += 1
        if self.down:
            return None, "store-error"
        found = self.data.get(recipient)
        return (found, None) if found is not None else (None, "unknown-recipient")


class SlowRenderer:
    """Counts renders; each waits for ``gate`` (set it to let renders finish)."""

    def __init__(self, delay_s: float = 0.0) -> None:
        self.calls = 0
        self.delay_s = delay_s
        self.gate = threading.Event()
        self.gate.set()

    def __call__(self, job: RenderJob) -> bytes:
        self.calls += 1
        self.gate.wait(5)
        time.sleep(self.delay_s)
        return render.draw(job)


@pytest.fixture
def profiles() -> Profiles:
    return Profiles()


@pytest.fixture
def content_factory(profiles: Profiles) -> Iterator[Any]:
    made: list[ImageContent] = []

    def make(renderer: Any = render.draw, **kw: Any) -> ImageContent:
        content = ImageContent(profiles, renderer=renderer, **kw)
        made.append(content)
        return content

    yield make
    for content in made:
        content.close()


def block_with_budget(root: Path, budget_ms: int = 500) -> ImageBlock:
    return campaign(root, GREETING.replace("budget_ms = 500", f"budget_ms = {budget_ms}")).images["hello"]


def ask(block: ImageBlock, recipient: str | None = "r1") -> ImageRequest:
    return ImageRequest("imgs", block, recipient, "png", 1, "direct")


async def test_identical_images_render_once_for_many_concurrent_requests(
    tmp_path: Path, content_factory: Any
) -> None:
    renderer = SlowRenderer()
    renderer.gate.clear()
    content = content_factory(renderer)
    block = block_with_budget(tmp_path)
    # r1 and r2 have the same first name: the same content key, so one render serves both.
    requests = [ask(block, "r1" if i % 2 else "r2") for i in range(20)]
    tasks = [asyncio.ensure_future(content.serve(r)) for r in requests]
    await asyncio.sleep(0.05)
    renderer.gate.set()
    served = await asyncio.gather(*tasks)
    assert renderer.calls == 1 and content.renders == 1
    assert {s.body for s in served} == {served[0].body} and all(s.fallback_reason is None for s in served)
    again = await content.serve(ask(block, "r1"))
    assert again.body == served[0].body and content.renders == 1  # re-open: from cache


async def test_render_runs_in_worker_threads_never_on_the_loop(tmp_path: Path, content_factory: Any) -> None:
    content = content_factory()
    loop_thread = threading.current_thread().name
    served = await content.serve(ask(block_with_budget(tmp_path)))
    assert decode(served.body).size == (300, 100)
    assert content.render_threads and loop_thread not in content.render_threads
    assert all(name.startswith("opentime-img") for name in content.render_threads)


async def test_late_render_falls_back_then_fills_the_cache(tmp_path: Path, content_factory: Any) -> None:
    content = content_factory(SlowRenderer(delay_s=0.3))
    block = block_with_budget(tmp_path, budget_ms=50)
    late = await content.serve(ask(block))
    assert (late.body, late.fallback_reason) == (block.fallbacks["png", 1], "budget-exceeded")
    await asyncio.sleep(0.4)
    fresh = await content.serve(ask(block))
    assert fresh.fallback_reason is None and fresh.body != late.body
    assert content.renders == 1


async def test_store_down_serves_last_good_render_else_fallback(
    tmp_path: Path, content_factory: Any, profiles: Profiles
) -> None:
    content = content_factory(ttl_seconds=0.0)  # every open goes back to the store
    block = block_with_budget(tmp_path)
    good = await content.serve(ask(block, "r1"))
    profiles.down = True
    again = await content.serve(ask(block, "r1"))
    assert (again.body, again.fallback_reason) == (good.body, "store-error")
    other = await content.serve(ask(block, "r2"))
    assert (other.body, other.fallback_reason) == (block.fallbacks["png", 1], "store-error")


async def test_unknown_recipient_and_render_errors_fall_back(
    tmp_path: Path, content_factory: Any, profiles: Profiles
) -> None:
    def broken(job: RenderJob) -> bytes:
        raise RuntimeError("boom")

    block = block_with_budget(tmp_path)
    unknown = await content_factory().serve(ask(block, "nobody"))
    assert (unknown.body, unknown.fallback_reason) == (block.fallbacks["png", 1], "unknown-recipient")
    failed = await content_factory(broken).serve(ask(block, "r1"))
    assert (failed.body, failed.fallback_reason) == (block.fallbacks["png", 1], "render-error")


async def test_a_text_without_its_data_is_left_out_and_the_image_still_renders(
    tmp_path: Path, content_factory: Any, profiles: Profiles
) -> None:
    profiles.data["r3"] = {"first_name": "Ada"}
    strict = campaign(tmp_path / "s", GREETING.replace("| default('there') ", "| int + profile.x ")).images[
        "hello"
    ]
    odd = await content_factory().serve(ask(strict, "r3"))
    assert odd.fallback_reason is None  # the recipient's image, with that one layer left out
    colours = decode(odd.body).convert("RGB").getcolors()
    assert colours == [(300 * 100, (0x10, 0x20, 0x30))]  # only the background: no text drawn


async def test_a_failed_render_is_remembered_briefly_and_logged_once(
    tmp_path: Path, content_factory: Any, profiles: Profiles, caplog: pytest.LogCaptureFixture
) -> None:
    calls = 0

    def broken(job: RenderJob) -> bytes:
        nonlocal calls
        calls += 1
        raise RuntimeError("boom")

    block = block_with_budget(tmp_path)
    content = content_factory(broken)
    profiles.data.update({f"p{i}": {"first_name": f"Name{i}"} for i in range(5)})
    for _ in range(3):  # re-opens of one recipient: no re-render
        served = await content.serve(ask(block, "p0"))
        assert (served.body, served.fallback_reason) == (block.fallbacks["png", 1], "render-error")
    assert calls == 1
    for i in range(1, 5):  # other recipients (other content) fail too: one log line for the block
        await content.serve(ask(block, f"p{i}"))
    assert calls == 5
    failures = [r for r in caplog.records if "failed to render" in r.getMessage()]
    assert len(failures) == 1 and "Name" not in caplog.text  # once per block and reason, no data
    profiles.data["p0"] = {"first_name": "Changed"}
    content.forget("p0", {"imgs": campaign(tmp_path / "c", GREETING)})
    await content.serve(ask(block, "p0"))  # a profile change forgets the failure: new data is tried
    assert calls == 6


async def test_profile_only_reopen_skips_the_store(
    tmp_path: Path, content_factory: Any, profiles: Profiles
) -> None:
    content = content_factory()
    block = block_with_budget(tmp_path)
    await content.serve(ask(block))
    await content.serve(ask(block))
    assert profiles.calls == 1


async def test_reopen_after_a_profile_change_reads_the_new_profile(
    tmp_path: Path, content_factory: Any, profiles: Profiles
) -> None:
    content = content_factory()
    demo = campaign(tmp_path, GREETING)
    block = demo.images["hello"]
    first = await content.serve(ask(block))
    profiles.data["r1"] = {"first_name": "Changed"}
    content.forget("r1", {demo.name: demo})
    second = await content.serve(ask(block))
    assert profiles.calls == 2
    assert second.body != first.body


def test_fetch_classes_are_counted(content_factory: Any) -> None:
    content = content_factory(clock=lambda: 1000.0)
    assert content.classify("Mozilla/5.0", "203.0.113.9", 990) == "apple-mpp"
    assert content.classify("x GoogleImageProxy", None, None) == "gmail-proxy"
    assert content.fetch_counts["apple-mpp"] == 1 and content.fetch_counts["gmail-proxy"] == 1
    assert content.fetch_counts["direct"] == 0


async def test_a_render_that_read_the_old_profile_is_not_remembered(
    tmp_path: Path, content_factory: Any, profiles: Profiles
) -> None:
    # The profile changes while the first open's render is still running: what it drew is the old
    # data, so the next open must not take it for the recipient's fresh image.
    renderer = SlowRenderer()
    renderer.gate.clear()
    content = content_factory(renderer)
    demo = campaign(tmp_path, GREETING)
    first = asyncio.ensure_future(content.serve(ask(demo.images["hello"])))
    await asyncio.sleep(0.05)
    profiles.data["r1"] = {"first_name": "Changed"}
    content.forget("r1", {demo.name: demo})
    renderer.gate.set()
    await first
    await content.serve(ask(demo.images["hello"]))
    assert profiles.calls == 2 and renderer.calls == 2
