"""Countdowns on ``/v1/{token}/img/{block}.gif`` at a controlled clock: frame 0 true to the second, one
build per second shared by everyone, headers per kind, per-recipient deadlines, the ended image, expired
tokens and every fallback."""

from __future__ import annotations

import asyncio
import io
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
from PIL import Image
from starlette.testclient import TestClient

from app.app import create_app
from app.config import Settings
from app.content.images import ImageContent, Timed
from app.countdown.timers import CountdownRequest
from app.demo import recipient_id
from app.images.timer import digit_text, load_face
from app.security.keyring import KeyRing, remove, rotate, save_keyring
from app.security.tokens import TokenSigner
from tests.conftest import BASE_URL, load_rows
from tests.test_countdown import read_digits
from tests.test_images_helpers import campaign, decode, write_campaign

NO_CACHE = "no-cache, no-store, must-revalidate, max-age=0"
T0 = datetime(2026, 12, 21, 14, 54, tzinfo=UTC).timestamp()
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
    "cust-later": {"offer": {"ends_at": "2026-12-22T14:01:40Z"}},  # 100 s after them
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


@contextmanager
def timer_client(
    tmp_path: Path, settings: Settings, clock: Clock, ring: KeyRing | None = None
) -> Iterator[TestClient]:
    """The app over the BLOCKS campaign; ``ring``: serve with that key ring instead of the fixture's."""
    if not (tmp_path / "templates").exists():
        write_campaign(tmp_path / "templates", BLOCKS, name="demo")
        load_rows(settings.database_url, [(k, orjson.dumps(v)) for k, v in OFFERS.items()])
    settings = settings.replace(templates_dir=tmp_path / "templates")
    if ring is not None:
        keys = tmp_path / f"keys-{len(ring)}-{ring.signing_key.kid}.json"
        save_keyring(ring, keys, overwrite=True)
        settings = settings.replace(keys_file=keys)
    with TestClient(create_app(settings, clock=clock), base_url=BASE_URL) as test_client:
        yield test_client


@pytest.fixture
def timers(tmp_path: Path, settings: Settings, clock: Clock) -> Iterator[TestClient]:
    with timer_client(tmp_path, settings, clock) as test_client:
        yield test_client


def path(
    signer: TokenSigner,
    name: str,
    recipient: str | None = None,
    now: float = T0,
    ttl_seconds: int | None = None,
) -> str:
    if recipient is None:
        return f"/v1/{signer.sign_shared('demo', now=int(now), ttl_seconds=ttl_seconds)}/img/{name}"
    return f"/v1/{signer.sign('demo', recipient, now=int(now), ttl_seconds=ttl_seconds)}/img/{name}"


def renders(client: TestClient) -> int:
    content: ImageContent = client.app_state["services"].images
    return content.renders


def first_frame(body: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(body))
    image.seek(0)
    return image.convert("RGB")


def style(client: TestClient, block: str = "sale", scale: int = 1) -> Any:
    return client.app_state["services"].campaigns["demo"].countdowns[block].styles[scale]


def test_everyone_who_opens_in_the_same_second_shares_one_build(
    timers: TestClient, signer: TokenSigner, clock: Clock
) -> None:
    clock.now = T0 - 0.3  # 3d 2h 6m 0.3s left: the same whole seconds as at T0
    shared = timers.get(path(signer, "sale.gif"))
    assert shared.status_code == 200 and "x-opentime-fallback" not in shared.headers
    clock.now = T0
    bodies = {timers.get(path(signer, "sale.gif", recipient_id(i))).content for i in range(1, 21)}
    bodies.add(timers.get(path(signer, "sale.gif")).content)
    assert bodies == {shared.content} and renders(timers) == 1


def test_each_second_is_built_once_and_lives_one_second_in_the_cdn(
    timers: TestClient, signer: TokenSigner, clock: Clock
) -> None:
    first = timers.get(path(signer, "sale.gif"))
    assert first.headers["cache-control"] == NO_CACHE
    assert first.headers["cdn-cache-control"] == first.headers["surrogate-control"] == "max-age=1"
    assert first.headers["surrogate-key"] == "c-demo" and first.headers["content-type"] == "image/gif"
    clock.now = T0 + 0.5
    later = timers.get(path(signer, "sale.gif"))
    assert later.content != first.content and renders(timers) == 2
    assert read_digits(style(timers), first_frame(later.content)) == "03020559"
    assert later.headers["etag"] != first.headers["etag"]
    clock.now = T0 + 0.9
    same = timers.get(path(signer, "sale.gif"), headers={"If-None-Match": later.headers["etag"]})
    assert same.status_code == 304 and renders(timers) == 2


@pytest.mark.parametrize("offset", [0.0, 0.001, 0.25, 0.5, 0.999, 1.0, 59.7, 3601.2])
def test_frame_zero_is_within_a_second_of_the_request(
    timers: TestClient, signer: TokenSigner, clock: Clock, offset: float
) -> None:
    clock.now = T0 + offset
    frames = Image.open(io.BytesIO(timers.get(path(signer, "sale.gif")).content))
    shown = read_digits(style(timers), frames.convert("RGB"))
    days, hours, minutes, seconds = (int(shown[i : i + 2]) for i in range(0, 8, 2))
    shown_left = ((days * 24 + hours) * 60 + minutes) * 60 + seconds
    true_left = SALE_END - clock.now
    assert 0 <= true_left - shown_left < 1
    frames.seek(getattr(frames, "n_frames", 1) - 1)  # the last frame: 9 s later, where the GIF rests
    assert read_digits(style(timers), frames.convert("RGB")) == digit_text(shown_left - 9, 2)
    assert "loop" not in frames.info


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
    assert ny.headers["cdn-cache-control"] == "max-age=1"
    assert ny.headers["surrogate-key"].startswith("r-")
    berlin = timers.get(path(signer, "mine.gif", "cust-berlin"))
    assert berlin.content == ny.content and renders(timers) == 1  # same deadline instant, same key


def test_the_bytes_depend_on_the_time_left_not_the_deadline(
    timers: TestClient, signer: TokenSigner, clock: Clock
) -> None:
    ny = timers.get(path(signer, "mine.gif", "cust-ny"))
    clock.now = T0 + 100
    later = timers.get(path(signer, "mine.gif", "cust-later"))  # 100 s later, for a deadline 100 s later
    assert later.content == ny.content and later.headers["etag"] == ny.headers["etag"]
    assert renders(timers) == 1


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


def test_too_large_and_token_failures_fall_back(timers: TestClient, signer: TokenSigner) -> None:
    large = timers.get(path(signer, "tiny.gif"))
    assert large.headers["x-opentime-fallback"] == "too-large" and decode(large.content).size == (600, 120)
    # A per-recipient timer shows the recipient's own deadline: an expired token gets none of it.
    expired = timers.get(path(signer, "mine@2x.gif", "cust-ny", now=T0 - 1000, ttl_seconds=10))
    assert expired.headers["x-opentime-fallback"] == "token-expired"
    assert decode(expired.content).size == (1200, 240)
    assert expired.content == timers.get(path(signer, "mine@2x.gif", "cust-none")).content
    bad = timers.get("/v1/nope/img/sale.gif")
    assert bad.status_code == 200 and decode(bad.content).size == (1, 1)


def test_an_expired_token_keeps_its_campaign_wide_timer_while_its_key_is_in_the_ring(
    tmp_path: Path, settings: Settings, ring: KeyRing, clock: Clock
) -> None:
    sent = T0 - 40 * 86400  # sent 40 days ago: the tokens expired after 31
    old = TokenSigner(ring)
    urls = [path(old, "sale.gif", now=sent), path(old, "sale.gif", "cust-ny", now=sent)]
    rotated = rotate(ring, datetime.fromtimestamp(T0, UTC))  # a new key signs; the old one still verifies
    with timer_client(tmp_path, settings, clock, rotated) as client:
        for url in urls:
            live = client.get(url)
            assert live.status_code == 200 and "x-opentime-fallback" not in live.headers
            assert read_digits(style(client), first_frame(live.content)) == "03020600"
            assert live.headers["cdn-cache-control"] == "max-age=1"
            assert live.headers["surrogate-key"] == "c-demo"  # nothing about the recipient
        clock.now = SALE_END + 5
        ended = client.get(urls[0])
        assert "x-opentime-fallback" not in ended.headers
        assert ended.content == load_face(style(client)).expired_gif
        # The per-recipient timer of the same (expired) token: still the fallback.
        personal = client.get(path(old, "mine.gif", "cust-ny", now=sent))
        assert personal.headers["x-opentime-fallback"] == "token-expired"
    clock.now = T0
    retired = remove(rotated, ring.signing_key.kid)  # the old key left the ring: its tokens are unknown
    with timer_client(tmp_path, settings, clock, retired) as client:
        gone = client.get(urls[0])
        assert gone.headers["x-opentime-fallback"] == "token-unknown-key"
        # Not authentic any more: no live digits, only the block's static designed fallback (the
        # campaign it names picks nothing but public, static content).
        sale = client.app_state["services"].campaigns["demo"].countdowns["sale"]
        assert gone.content == sale.fallbacks["gif", 1]


# --- the content service directly: coalescing, worker threads, budget --------------------------------------


async def no_profile(recipient: str, budget_s: float) -> tuple[dict[str, Any] | None, str | None]:
    return None, "unknown-recipient"


async def countdown(content: ImageContent, request: CountdownRequest) -> Timed:
    timed = content.serve_countdown(request)
    return timed if isinstance(timed, Timed) else await timed


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
        served = await asyncio.gather(*(countdown(content, request) for _ in range(20)))
        assert content.renders == 1 and len({timed.served.body for timed in served}) == 1
        left = int(SALE_END - T0)
        assert all(timed.served.fallback_reason is None and timed.left == left for timed in served)
        assert content.render_threads and all(n.startswith("opentime-img") for n in content.render_threads)
    finally:
        content.close()


@pytest.mark.anyio
async def test_a_late_render_falls_back_then_fills_the_cache(tmp_path: Path) -> None:
    spec = BLOCKS.replace("frames = 10", "frames = 120\nbudget_ms = 20")
    block = campaign(tmp_path, spec).countdowns["sale"]
    content = ImageContent(no_profile, clock=Clock(), max_workers=1)
    busy = threading.Event()
    try:
        # The only worker is busy elsewhere (another block's render): this one starts after its budget.
        await asyncio.sleep(0)
        asyncio.get_running_loop().run_in_executor(content._pool, busy.wait, 0.5)
        request = CountdownRequest("demo", block, None, "gif", 2)
        late = await countdown(content, request)
        busy.set()
        assert late.served.fallback_reason == "budget-exceeded" and late.left is None
        assert late.served.body == block.fallbacks["gif", 2]
        for _ in range(500):  # the render goes on
            if not content.renders_pending:
                break
            await asyncio.sleep(0.01)
        ready = content.serve_countdown(request)
        assert isinstance(ready, Timed)  # built: answered without awaiting
        assert ready.served.fallback_reason is None and content.renders == 1
    finally:
        content.close()


def test_demo_campaign_serves_its_shared_countdown(client: TestClient, signer: TokenSigner) -> None:
    response = client.get(path(signer, "countdown.gif", now=time.time()))
    assert response.status_code == 200 and "x-opentime-fallback" not in response.headers
    assert decode(response.content).size == (600, 120)
