"""The spliced countdown GIF: its blocks as a decoder reads them, every frame against a reference render,
play-once, sizes, and the GIF writer it is made with."""

from __future__ import annotations

import io
import struct
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest
from PIL import Image, ImageChops

from app.campaigns.loader import load_campaigns
from app.config import PROJECT_ROOT
from app.countdown.clock import seconds_left
from app.images import gif
from app.images.timer import CountdownStyle, day_digits, digit_text, first_frame, load_face
from app.images.timer_gif import Splicer, countdown_gif
from tests.test_countdown import FONT, read_digits

DAY = 86400
# The demo campaign's timer GIF was 25.9 KB when it was rendered per 60 s bucket with Pillow's writer.
DEMO_GIF_BYTES_BEFORE = 25_900


@dataclass
class Block:
    """One GIF block as a decoder meets it."""

    kind: str  # "image", "control" (Graphic Control Extension) or "application"
    box: tuple[int, int, int, int] = (0, 0, 0, 0)  # left, top, width, height of an image
    delay_cs: int = 0
    disposal: int = 0
    local_palette: bool = False


def blocks(data: bytes) -> Iterator[Block]:
    """Walk a GIF89a file block by block (the structure browsers and Outlook parse)."""
    assert data[:6] == b"GIF89a"
    flags = data[10]
    pos = 13 + (3 << ((flags & 7) + 1) if flags & 0x80 else 0)
    while data[pos] != 0x3B:
        if data[pos] == 0x21:  # extension: label, then sub-blocks
            label = data[pos + 1]
            if label == 0xF9:
                packed, delay = data[pos + 3], struct.unpack("<H", data[pos + 4 : pos + 6])[0]
                yield Block("control", delay_cs=delay, disposal=(packed >> 2) & 7)
            else:
                yield Block("application" if label == 0xFF else f"extension-{label:#x}")
            pos += 2
        else:
            assert data[pos] == 0x2C, f"unexpected byte {data[pos]:#x} at {pos}"
            box = struct.unpack("<HHHH", data[pos + 1 : pos + 9])
            local = bool(data[pos + 9] & 0x80)
            yield Block("image", box=box, local_palette=local)
            pos += 11  # descriptor and the LZW minimum code size
        while data[pos]:  # data sub-blocks
            pos += data[pos] + 1
        pos += 1
    assert pos == len(data) - 1, "bytes after the trailer"


def frames_of(data: bytes) -> list[Image.Image]:
    image = Image.open(io.BytesIO(data))
    out = []
    for index in range(getattr(image, "n_frames", 1)):
        image.seek(index)
        out.append(image.convert("RGB"))
    return out


@pytest.fixture(scope="module")
def style() -> CountdownStyle:
    return CountdownStyle(font_path=FONT, frame_count=120)


def reference(style: CountdownStyle, left: int, digits: int) -> Image.Image:
    return first_frame(load_face(style), digit_text(left, digits)).convert("RGB")


def test_structure_full_frame_zero_then_small_rectangles_one_second_apart(style: CountdownStyle) -> None:
    data = countdown_gif(style, 3 * DAY + 3600 + 65)
    found = list(blocks(data))
    assert [b.kind for b in found] == ["control", "image"] * 120  # no NETSCAPE2.0 loop extension
    controls, images = found[0::2], found[1::2]
    assert all(c.delay_cs == 100 and c.disposal == 1 for c in controls)  # 1 s, drawn over the previous
    assert images[0].box == (0, 0, 600, 120)  # frame 0 is the whole picture, for Outlook
    face = load_face(style)
    digit_rows = (face.digit_top, face.digit_top + face.cell[1])
    for image in images[1:]:
        _, top, width, height = image.box
        assert digit_rows[0] <= top and top + height <= digit_rows[1] and not image.local_palette
        assert width * height < 600 * face.cell[1]
    seconds_cells = face.cells(2)[-2:]
    ones_only = images[1].box  # 65 -> 64 s: only the seconds' ones digit changes
    ones_cell = (seconds_cells[1][0], seconds_cells[1][0] + face.cell[0])
    assert ones_cell[0] <= ones_only[0] and ones_only[0] + ones_only[2] <= ones_cell[1]


@pytest.mark.parametrize(
    "left",
    [
        0,  # the last second: one frame of zeros
        7,  # reaches zero within the frames and rests there
        61,  # a minute turns
        3600 + 30,  # an hour turns
        2 * DAY + 45,  # a day turns: 02 00:00:00 -> 01 23:59:59
        100 * DAY + 20,  # three day digits throughout (the layout of frame 0 holds for the whole GIF)
        100 * DAY - 10,  # two day digits
        1000 * DAY + 50,  # days stay at 999 while hours turn
    ],
)
def test_every_frame_is_the_whole_picture_of_its_second(style: CountdownStyle, left: int) -> None:
    frames = frames_of(countdown_gif(style, left))
    assert len(frames) == min(120, left + 1)
    digits = day_digits(left)
    for index, frame in enumerate(frames):
        expected = reference(style, left - index, digits)
        assert ImageChops.difference(frame, expected).getbbox() is None, f"frame {index}"


def test_plays_once_and_rests_on_its_last_frame(style: CountdownStyle) -> None:
    demo = CountdownStyle(font_path=FONT)  # 60 frames
    data = countdown_gif(demo, 3 * DAY + 2 * 3600 + 5 * 60 + 9)
    image = Image.open(io.BytesIO(data))
    assert getattr(image, "n_frames", 1) == 60 and "loop" not in image.info
    frames = frames_of(data)
    assert read_digits(demo, frames[0]) == "03020509"
    assert read_digits(demo, frames[-1]) == "03020410"  # 59 s later, and it stays there


def test_bytes_depend_on_the_seconds_left_only(style: CountdownStyle) -> None:
    now = datetime(2026, 6, 1, 12, tzinfo=UTC)
    one = countdown_gif(style, seconds_left(now + timedelta(hours=5, milliseconds=300), now))
    other = countdown_gif(style, seconds_left(now + timedelta(days=3), now + timedelta(days=3, hours=-5)))
    assert one == other
    assert countdown_gif(style, None) == load_face(style).expired_gif


def test_concurrent_builds_in_threads_agree(style: CountdownStyle) -> None:
    fresh = CountdownStyle(font_path=FONT, digit_color="#ffcc00")
    lefts = [DAY + 3600 * h + 59 for h in range(12)]  # every one crosses a minute: deltas made on demand
    with ThreadPoolExecutor(4) as pool:
        built = list(pool.map(lambda left: countdown_gif(fresh, left), lefts * 3))
    assert built == [countdown_gif(fresh, left) for left in lefts * 3]
    assert [read_digits(fresh, frames_of(b)[0]) for b in built[:2]] == ["01000059", "01010059"]


def test_negative_seconds_are_refused(style: CountdownStyle) -> None:
    with pytest.raises(ValueError, match="seconds left must be >= 0"):
        countdown_gif(style, -1)


def test_demo_timer_is_no_larger_than_before() -> None:
    campaigns = load_campaigns(
        PROJECT_ROOT / "amp_templates",
        PROJECT_ROOT / "static",
        default_budget_ms=150,
        public_base_url="https://amp.example.com",
    )
    demo = campaigns["demo"].countdowns["countdown"].styles[1]
    sizes = [len(countdown_gif(demo, left)) for left in (3 * DAY + 7509, 30 * DAY + 59, 150 * DAY + 3600)]
    assert max(sizes) <= DEMO_GIF_BYTES_BEFORE, sizes


def test_a_splicer_encodes_each_change_once(style: CountdownStyle) -> None:
    splicer = Splicer(load_face(style))
    first = splicer.delta(2, "01020359", "01020358")
    assert splicer.delta(2, "09090959", "09090958") is first  # the same change of the same cell


# --- the GIF writer ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(("colours", "bits"), [(1, 2), (2, 2), (4, 2), (5, 3), (16, 4), (17, 5), (256, 8)])
def test_palette_bits(colours: int, bits: int) -> None:
    assert gif.palette_bits(bytes(3 * colours)) == bits


def test_palette_too_large() -> None:
    with pytest.raises(ValueError, match="at most 256 colours"):
        gif.palette_bits(bytes(3 * 257))


def test_written_gif_decodes_to_the_same_pixels() -> None:
    palette = bytes([0, 0, 0, 255, 0, 0, 0, 255, 0, 0, 0, 255, 255, 255, 255])  # 5 colours: 3 bits
    first = Image.new("P", (20, 10), 0)
    first.paste(Image.new("P", (5, 5), 4), (2, 2))
    patch = Image.new("P", (3, 2), 1)
    data = (
        gif.header(20, 10, palette)
        + gif.frame(first, 0, 0, delay_ms=500, bits=3)
        + gif.frame(patch, 10, 7, delay_ms=250, bits=3)
        + gif.TRAILER
    )
    image = Image.open(io.BytesIO(data))
    assert (image.size, getattr(image, "n_frames", 1), image.info["duration"]) == ((20, 10), 2, 500)
    assert image.convert("RGB").getpixel((3, 3)) == (255, 255, 255)
    image.seek(1)
    frame = image.convert("RGB")
    assert image.info["duration"] == 250
    assert frame.getpixel((11, 8)) == (255, 0, 0) and frame.getpixel((3, 3)) == (255, 255, 255)
    with pytest.raises(ValueError, match="palette images"):
        gif.frame(Image.new("RGB", (2, 2)), 0, 0, delay_ms=10, bits=3)
