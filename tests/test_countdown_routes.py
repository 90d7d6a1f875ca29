"""Countdowns on ``/v1/{token}/img/{block}.gif`` at a fixed clock: shared renders per bucket, headers per
kind, the first frame's digits, per-recipient deadlines, the expired image and every fallback."""

from __future__ import annotations

import asyncio
import io
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
from PIL import Image
from starlette.testclient import TestClient

from app.app import create_app
from app.config import Settings
from app.content.images import ImageContent
from app.countdown.timers import CountdownRequest
from app.demo import recipient_id
from app.images.timer import digit_text, load_face
from app.security.tokens import TokenSigner
from tests.conftest import BASE_URL, load_rows
from tests.test_countdown import read_digits
from tests.test_images_helpers import campaign, decode, write_campaign

NO_CACHE = "no-cache, no-store, must-revalidate, max-age=0"
T0 = datetime(2026, 12, 21, 14, 54, tzinfo=UTC).timestamp()  # on a minute: the start of a bucket
SALE_END = datetime(2026, 12, 24, 17, 0, tzinfo=UTC).timestamp()  # 18:00 in Berlin
BLOCKS = """
[blocks.sale]
kind = "countdown"
deadline = "2026-12-24T18:00"
zone = "Europe/Berlin"
frames = 10

[blocks.mine]
kind = "countdown"
deadline_field = "offer.ends_at"
zone_field = "offer.zone"
zone = "Europe/Berlin"
frames = 3

[blocks.tiny]
kind = "countdown"
deadline = "2026-12-24T18:00"
zone = "Europe/Berlin"
max_bytes = 1000
"""
OFFERS = {
    "cust-ny": {"offer": {"ends_at": "2026-12-22T09:00", "zone": "America/New_York"}},  # 14:00Z
    "cust-berlin": {"offer": {"ends_at": "2026-12-22T15:00"}},  # 14:00Z too: the same pixels
    "cust-none": {"first_name": "Nora"},
    # Before year 1 in UTC: OverflowError used to escape and serve a blank image instead of the fallback.
    "cust-year-zero": {"offer": {"ends_at": "0001-01-01T00:00:00+01:00"}},
}


class Clock:
    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def timers(tmp_path: Path, settings: Settings, clock: Clock) -> Iterator[TestClient]:
    write_campaign(tmp_path / "templates", BLOCKS, name="demo")
    load_rows(settings.database_url, [(k, orjson.dumps(v)) for k, v in OFFERS.items()])
    app = create_app(settings.replace(templates_dir=tmp_path / "templates"), clock=clock)
    with TestClient(app, base_url=BASE_URL) as test_client:
        yield test_client


def path(signer: TokenSigner, name: str, recipient: str | None = None, now: float = T0, **kw: int) -> str:
    if recipient is None:
        return f"/v1/{signer.sign_shared('demo', now=int(now), **kw)}/img/{name}"
    return f"/v1/{signer.sign('demo', recipient, now=int(now), **kw)}/img/{name}"


def renders(client: TestClient) -> int:
    content: ImageContent = client.app_state["services"].images
    return content.renders


def first_frame(body: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(body))
    image.seek(0)
    return image.convert("RGB")


def style(client: TestClient, block: str = "sale", scale: int = 1) -> Any:
    return client.app_state["services"].campaigns["demo"].countdowns[block].styles[scale]


def test_many_recipients_in_one_bucket_share_one_render(timers: TestClient, signer: TokenSigner) -> None:
    shared = timers.get(path(signer, "sale.gif"))
    assert shared.status_code == 200 and "x-opentime-fallback" not in shared.headers
    bodies = {timers.get(path(signer, "sale.gif", recipient_id(i))).content for i in range(1, 21)}
    bodies.add(timers.get(path(signer, "sale.gif")).content)
    assert bodies == {shared.content} and renders(timers) == 1


def test_a_new_bucket_renders_again_and_the_cdn_ttl_ends_with_the_bucket(
    timers: TestClient, signer: TokenSigner, clock: Clock
) -> None:
    first = timers.get(path(signer, "sale.gif"))
    assert first.headers["cache-control"] == NO_CACHE
    assert first.headers["cdn-cache-control"] == first.headers["surrogate-control"]
    assert first.headers["cdn-cache-control"] == "max-age=60, stale-if-error=86400"
    assert first.headers["surrogate-key"] == "c-demo" and first.headers["content-type"] == "image/gif"
    clock.now = T0 + 42.5
    later = timers.get(path(signer, "sale.gif"))
    assert later.content == first.content and renders(timers) == 1
    assert later.headers["cdn-cache-control"].startswith("max-age=17,")
    clock.now = T0 + 60
    moved = timers.get(path(signer, "sale.gif"))
    assert moved.content != first.content and renders(timers) == 2
    assert moved.headers["etag"] != first.headers["etag"]
    again = timers.get(path(signer, "sale.gif"), headers={"If-None-Match": moved.headers["etag"]})
    assert again.status_code == 304


def test_first_frame_shows_the_time_left_at_the_clock(timers: TestClient, signer: TokenSigner) -> None:
    body = timers.get(path(signer, "sale.gif")).content
    image = decode(body)
    assert (image.format, image.size, getattr(image, "n_frames", 1)) == ("GIF", (600, 120), 10)
    assert read_digits(style(timers), first_frame(body)) == "03020600" == digit_text(int(SALE_END - T0), 2)


@pytest.mark.parametrize(
    ("name", "fmt", "size", "frames"),
    [
        ("sale@2x.gif", "GIF", (1200, 240), 10),
        ("sale.png", "PNG", (600, 120), 1),
        ("sale.jpg", "JPEG", (600, 120), 1),
        ("sale@2x.png", "PNG", (1200, 240), 1),
    ],
)
def test_formats_and_scales(
    timers: TestClient, signer: TokenSigner, name: str, fmt: str, size: tuple[int, int], frames: int
) -> None:
    response = timers.get(path(signer, name))
    assert response.status_code == 200 and "x-opentime-fallback" not in response.headers
    image = decode(response.content)
    assert (image.format, image.size, getattr(image, "n_frames", 1)) == (fmt, size, frames)
    if fmt == "PNG":  # the still is the GIF's first frame
        scale = 2 if "@2x" in name else 1
        gif = timers.get(path(signer, name.replace(".png", ".gif"))).content
        assert read_digits(style(timers, scale=scale), image.convert("RGB")) == "03020600"
        assert read_digits(style(timers, scale=scale), first_frame(gif)) == "03020600"


def test_per_recipient_deadlines(timers: TestClient, signer: TokenSigner) -> None:
    ny = timers.get(path(signer, "mine.gif", "cust-ny"))
    assert ny.status_code == 200 and "x-opentime-fallback" not in ny.headers
    assert read_digits(style(timers, "mine"), first_frame(ny.content)) == "00230600"  # 23:06 to 14:00Z
    assert ny.headers["cdn-cache-control"] == "max-age=30, stale-if-error=86400"
    assert ny.headers["surrogate-key"].startswith("r-")
    berlin = timers.get(path(signer, "mine.gif", "cust-berlin"))
    assert berlin.content == ny.content and renders(timers) == 1  # same deadline instant, same key


@pytest.mark.parametrize(
    ("recipient", "reason"),
    [
        ("cust-none", "no-deadline"),
        ("cust-year-zero", "no-deadline"),
        (None, "no-recipient"),
        ("cust-9999999", "unknown-recipient"),
    ],
)
def test_per_recipient_fallbacks(
    timers: TestClient, signer: TokenSigner, recipient: str | None, reason: str
) -> None:
    response = timers.get(path(signer, "mine@2x.gif", recipient))
    assert response.status_code == 200 and response.headers["x-opentime-fallback"] == reason
    assert decode(response.content).size == (1200, 240)
    assert response.headers["cdn-cache-control"] == "max-age=5" and "surrogate-key" not in response.headers


def test_after_the_deadline_the_expired_image_is_cached_long(
    timers: TestClient, signer: TokenSigner, clock: Clock
) -> None:
    clock.now = SALE_END
    response = timers.get(path(signer, "sale.gif"))
    assert response.content == load_face(style(timers)).expired_gif
    assert response.headers["cdn-cache-control"] == "max-age=86400, stale-if-error=86400"
    assert response.headers["cache-control"] == NO_CACHE
    clock.now = SALE_END + 3600
    assert timers.get(path(signer, "sale.gif", now=SALE_END)).content == response.content
    assert renders(timers) == 1


def test_too_large_and_token_failures_fall_back(
    timers: TestClient, signer: TokenSigner, clock: Clock
) -> None:
    large = timers.get(path(signer, "tiny.gif"))
    assert large.headers["x-opentime-fallback"] == "too-large" and decode(large.content).size == (600, 120)
    expired = timers.get(path(signer, "sale@2x.gif", now=T0 - 1000, ttl_seconds=10))
    assert expired.headers["x-opentime-fallback"] == "token-expired"
    assert decode(expired.content).size == (1200, 240)
    bad = timers.get("/v1/nope/img/sale.gif")
    assert bad.status_code == 200 and decode(bad.content).size == (1, 1)


# --- the content service directly: coalescing, worker threads, budget --------------------------------------


async def no_profile(recipient: str, budget_s: float) -> tuple[dict[str, Any] | None, str | None]:
    return None, "unknown-recipient"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.mark.anyio
async def test_concurrent_requests_coalesce_into_one_render_off_the_loop(tmp_path: Path) -> None:
    block = campaign(tmp_path, BLOCKS).countdowns["sale"]
    content = ImageContent(no_profile, clock=Clock())
    try:
        request = CountdownRequest(
            "demo",
            block,
            None,
            "gif",
            2,
        )
        served = await asyncio.gather(*(content.serve_countdown(request) for _ in range(20)))
        assert content.renders == 1 and len({timed.served.body for timed in served}) == 1
        assert all(timed.served.fallback_reason is None and timed.shared_ttl == 60 for timed in served)
        assert content.render_threads and all(n.startswith("opentime-img") for n in content.render_threads)
    finally:
        content.close()


@pytest.mark.anyio
async def test_a_late_render_falls_back_then_fills_the_cache(tmp_path: Path) -> None:
    spec = BLOCKS.replace("frames = 10", "frames = 120\nbudget_ms = 1")
    block = campaign(tmp_path, spec).countdowns["sale"]
    content = ImageContent(no_profile, clock=Clock())
    try:
        request = CountdownRequest("demo", block, None, "gif", 2)
        late = await content.serve_countdown(request)
        assert late.served.fallback_reason == "budget-exceeded" and late.shared_ttl is None
        assert late.served.body == block.fallbacks["gif", 2]
        for _ in range(500):  # the render goes on
            if not content.renders_pending:
                break
            await asyncio.sleep(0.01)
        ready = await content.serve_countdown(request)
        assert ready.served.fallback_reason is None and content.renders == 1
    finally:
        content.close()


def test_demo_campaign_serves_its_shared_countdown(client: TestClient, signer: TokenSigner) -> None:
    response = client.get(path(signer, "countdown.gif", now=time.time()))
    assert response.status_code == 200 and "x-opentime-fallback" not in response.headers
    assert decode(response.content).size == (600, 120)
