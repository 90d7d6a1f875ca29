"""Countdown timers: DST-correct deadlines, seconds left, the style, and the GIF's frames and pixels."""

from __future__ import annotations

import io
import itertools
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from PIL import Image, ImageChops

from app.countdown.clock import (
    DeadlineError,
    DeadlineSource,
    Remaining,
    StyleError,
    deadline_from_profile,
    parse_deadline,
    remaining,
    resolve_local,
    seconds_left,
)
from app.images.timer import CountdownStyle, load_face
from app.images.timer_gif import countdown_gif

FONT = "/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf"
BERLIN = "Europe/Berlin"
NEW_YORK = "America/New_York"
NOW = datetime(2026, 6, 1, 12, 0, 0, tzinfo=UTC)


def utc(
    year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0, us: int = 0
) -> datetime:
    return datetime(year, month, day, hour, minute, second, us, tzinfo=UTC)


def render_countdown(style: CountdownStyle, deadline: datetime, now: datetime) -> bytes:
    """The GIF a request at ``now`` gets."""
    return countdown_gif(style, seconds_left(deadline, now))


def frame_count(gif: bytes | Image.Image) -> int:
    image = Image.open(io.BytesIO(gif)) if isinstance(gif, bytes) else gif
    count: int = getattr(image, "n_frames", 1)
    return count


@pytest.fixture(scope="module")
def style() -> CountdownStyle:
    return CountdownStyle(font_path=FONT)


# --- deadlines across DST changes ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("tz", "now_local", "deadline_local", "seconds"),
    [
        # Berlin springs forward on 2026-03-29 and falls back on 2026-10-25: those days last 23 h and 25 h.
        (BERLIN, "2026-03-28T12:00", "2026-03-29T12:00", 23 * 3600),
        (BERLIN, "2026-10-24T12:00", "2026-10-25T12:00", 25 * 3600),
        (BERLIN, "2026-03-29T01:59:30", "2026-03-29T03:00:10", 40),
        # New York changes on 2026-03-08 and 2026-11-01.
        (NEW_YORK, "2026-03-07T12:00", "2026-03-08T12:00", 23 * 3600),
        (NEW_YORK, "2026-10-31T12:00", "2026-11-01T12:00", 25 * 3600),
        (NEW_YORK, "2026-03-01T09:00", "2026-03-15T09:00", 14 * 86400 - 3600),
    ],
)
def test_remaining_across_dst_is_counted_on_instants(
    tz: str, now_local: str, deadline_local: str, seconds: int
) -> None:
    now = parse_deadline(now_local, tz)
    deadline = parse_deadline(deadline_local, tz)
    assert (deadline - now).total_seconds() == seconds
    days, rest = divmod(seconds, 86400)
    assert remaining(deadline, now) == Remaining(days, rest // 3600, rest % 3600 // 60, rest % 60)


@pytest.mark.parametrize(
    ("tz", "wall", "instant"),
    [
        # Non-existent (spring forward): read with the offset before the gap, i.e. 03:30 summer time.
        (BERLIN, "2026-03-29T02:30", utc(2026, 3, 29, 1, 30)),
        (NEW_YORK, "2026-03-08T02:30", utc(2026, 3, 8, 7, 30)),
        # Ambiguous (fall back): the first occurrence, still on summer time.
        (BERLIN, "2026-10-25T02:30", utc(2026, 10, 25, 0, 30)),
        (NEW_YORK, "2026-11-01T01:30", utc(2026, 11, 1, 5, 30)),
        # Either side of the changes, for contrast.
        (BERLIN, "2026-10-25T03:30", utc(2026, 10, 25, 2, 30)),
        (NEW_YORK, "2026-11-01T02:30", utc(2026, 11, 1, 7, 30)),
    ],
)
def test_gap_and_overlap_follow_rfc_5545(tz: str, wall: str, instant: datetime) -> None:
    assert parse_deadline(wall, tz) == instant
    assert resolve_local(datetime.fromisoformat(wall), ZoneInfo(tz)) == instant


def test_ambiguous_deadline_counts_to_the_first_occurrence() -> None:
    deadline = parse_deadline("2026-10-25T02:30", BERLIN)
    now = parse_deadline("2026-10-25T01:30", BERLIN)  # CEST, one hour before the first 02:30
    assert remaining(deadline, now) == Remaining(0, 1, 0, 0)


@pytest.mark.parametrize(
    ("value", "instant"),
    [
        ("2026-12-24T18:00:00+01:00", utc(2026, 12, 24, 17)),
        ("2026-12-24T18:00Z", utc(2026, 12, 24, 18)),
        ("2026-12-24 18:00:30-05:00", utc(2026, 12, 24, 23, 0, 30)),
        ("20261224T180000+0100", utc(2026, 12, 24, 17)),
    ],
)
def test_fixed_offset_deadlines(value: str, instant: datetime) -> None:
    assert parse_deadline(value) == instant
    assert parse_deadline(value, NEW_YORK) == instant  # an explicit offset wins over the zone


def test_local_deadline_resolves_in_its_zone() -> None:
    assert parse_deadline("2026-12-24T18:00", BERLIN) == utc(2026, 12, 24, 17)
    assert parse_deadline("2026-07-24T18:00", BERLIN) == utc(2026, 7, 24, 16)


@pytest.mark.parametrize(
    ("value", "tz", "message"),
    [
        ("next friday", BERLIN, "not an ISO 8601"),
        ("2026-12-24", BERLIN, "needs a time of day"),
        ("2026-12-24T18:00", None, "no UTC offset and no time zone"),
        ("2026-12-24T18:00", "Mars/Olympus_Mons", "unknown time zone"),
        ("2026-12-24T18:00", "../../etc/passwd", "unknown time zone"),
        ("2026-02-30T18:00", BERLIN, "not an ISO 8601"),
        # Valid ISO 8601 whose UTC instant is outside datetime's range: OverflowError used to escape.
        ("0001-01-01T00:00:00+01:00", None, "outside the years 1 to 9999"),
        ("9999-12-31T23:59:59-01:00", None, "outside the years 1 to 9999"),
        ("0001-01-01T00:00:00", BERLIN, "outside the years 1 to 9999"),
        ("9999-12-31T23:59:59", "America/New_York", "outside the years 1 to 9999"),
    ],
)
def test_unreadable_deadlines(value: str, tz: str | None, message: str) -> None:
    with pytest.raises(DeadlineError, match=message):
        parse_deadline(value, tz)


@pytest.mark.parametrize(
    ("profile", "message"),
    [
        ({}, "no deadline field 'ends_at'"),
        ({"ends_at": None}, "no deadline field 'ends_at'"),
        ({"ends_at": 1767225600}, "'ends_at' must be an ISO 8601 string, not int"),
        ({"ends_at": True}, "not bool"),
        (
            {"ends_at": "next friday 18:00"},
            "profile field 'ends_at': deadline 'next friday 18:00' is not an ISO",
        ),
        ({"ends_at": "2026-12-24T18:00"}, "no UTC offset and no time zone"),
        ({"ends_at": "0001-01-01T00:00:00+01:00"}, "profile field 'ends_at': .* outside the years"),
    ],
)
def test_profile_deadline_errors(profile: dict[str, object], message: str) -> None:
    with pytest.raises(DeadlineError, match=message):
        deadline_from_profile(profile, "ends_at")


def test_deadline_source_shared_and_per_profile() -> None:
    shared = DeadlineSource(at="2026-12-24T18:00", zone=BERLIN)
    assert shared.shared
    assert shared.resolve() == utc(2026, 12, 24, 17)
    own = DeadlineSource(field="ends_at", zone=BERLIN, zone_field="tz")
    assert not own.shared
    assert own.resolve({"ends_at": "2026-12-24T18:00"}) == utc(2026, 12, 24, 17)
    assert own.resolve({"ends_at": "2026-12-24T18:00", "tz": NEW_YORK}) == utc(2026, 12, 24, 23)
    with pytest.raises(DeadlineError, match="unknown time zone 'Nowhere'"):
        own.resolve({"ends_at": "2026-12-24T18:00", "tz": "Nowhere"})
    with pytest.raises(DeadlineError, match="'tz' must be a time zone name"):
        own.resolve({"ends_at": "2026-12-24T18:00", "tz": 1})


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({}, "exactly one of 'at' or 'field'"),
        ({"at": "2026-12-24T18:00Z", "field": "ends_at"}, "exactly one of 'at' or 'field'"),
        ({"at": "2026-12-24T18:00"}, "no time zone"),
        ({"field": "ends_at", "zone": "Berlin"}, "unknown time zone"),
    ],
)
def test_deadline_source_is_checked_when_built(kwargs: dict[str, str], message: str) -> None:
    with pytest.raises(DeadlineError, match=message):
        DeadlineSource(**kwargs)


def test_remaining_floors_and_stops_at_zero() -> None:
    deadline = utc(2026, 6, 2, 14, 3, 4)
    assert remaining(deadline, NOW) == Remaining(1, 2, 3, 4)
    assert remaining(deadline, NOW + timedelta(microseconds=1)) == Remaining(1, 2, 3, 3)
    assert remaining(deadline, deadline) == Remaining(0, 0, 0, 0)
    assert remaining(deadline, deadline + timedelta(days=3)) == Remaining(0, 0, 0, 0)


def test_naive_datetimes_are_refused() -> None:
    with pytest.raises(DeadlineError, match="now must be timezone-aware"):
        remaining(NOW, datetime(2026, 6, 1, 12))
    with pytest.raises(DeadlineError, match="deadline must be timezone-aware"):
        seconds_left(datetime(2026, 6, 1, 12), NOW)


# --- seconds left: what a timer shows, and its content key -----------------------------------------------


def test_seconds_left_is_floored_and_none_from_the_deadline_on() -> None:
    deadline = NOW + timedelta(seconds=75, milliseconds=400)
    assert seconds_left(deadline, NOW) == 75
    assert seconds_left(deadline, NOW + timedelta(milliseconds=399)) == 75
    assert seconds_left(deadline, NOW + timedelta(milliseconds=400)) == 75
    assert seconds_left(deadline, NOW + timedelta(milliseconds=401)) == 74
    assert seconds_left(deadline, deadline - timedelta(microseconds=1)) == 0
    assert seconds_left(deadline, deadline) is None
    assert seconds_left(deadline, deadline + timedelta(days=3)) is None


def test_seconds_left_is_never_more_than_a_second_behind_the_truth() -> None:
    deadline = utc(2026, 12, 24, 17)
    for step in range(4000):
        now = deadline - timedelta(seconds=3 * 86400) + timedelta(milliseconds=97 * step)
        true_left = (deadline - now).total_seconds()
        left = seconds_left(deadline, now)
        assert left is not None and 0 <= true_left - left < 1


def test_seconds_left_counts_instants_across_dst() -> None:
    deadline = parse_deadline("2026-03-29T12:00", BERLIN)  # the day Berlin springs forward: 23 hours
    assert seconds_left(deadline, parse_deadline("2026-03-28T12:00", BERLIN)) == 23 * 3600
    assert seconds_left(deadline, datetime(2026, 3, 28, 12, tzinfo=ZoneInfo(BERLIN))) == 23 * 3600


# --- style ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"font_path": ""}, "font_path"),
        ({"width": 50}, "width must be a whole number from 100 to 1600"),
        ({"height": 120.5}, "height must be"),
        ({"frame_count": 0}, "frame_count"),
        ({"frame_count": 600}, "frame_count"),
        ({"digit_size": 500}, "digit_size must be a whole number from 6 to 120"),
        ({"background": "#12345"}, "background '#12345' is not a colour"),
        ({"digit_color": "#ffffff80"}, "digit_color '#ffffff80' must be opaque"),
        ({"label_color": "blurple"}, "label_color"),
        ({"labels": ("D", "H", "M")}, "labels must be four strings"),
        ({"labels": ("D", "H", "M", "S" * 21)}, "at most 20 characters"),
        ({"expired_text": "  "}, "expired_text"),
    ],
)
def test_style_validation(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(StyleError, match=message):
        CountdownStyle(**{"font_path": FONT, **kwargs})  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"font_path": "/nonexistent/font.ttf"}, "cannot load font '/nonexistent/font.ttf'"),
        (
            {"width": 1600, "height": 100, "digit_size": 90, "label_size": 30},
            "need 104px of height, the image has 100px",
        ),
        ({"width": 200, "height": 200, "digit_size": 80}, "do not fit in 50px"),
        ({"expired_text": "THIS OFFER HAS ENDED, SEE YOU NEXT TIME", "expired_size": 60}, "does not fit"),
    ],
)
def test_fonts_and_fit_are_checked_when_loaded(kwargs: dict[str, object], message: str) -> None:
    style = CountdownStyle(**{"font_path": FONT, **kwargs})  # type: ignore[arg-type]
    with pytest.raises(StyleError, match=message):
        load_face(style)


def test_glyphs_are_rendered_once_per_style(style: CountdownStyle) -> None:
    assert load_face(style) is load_face(CountdownStyle(font_path=FONT))
    assert load_face(style) is not load_face(CountdownStyle(font_path=FONT, digit_color="#ff0000"))


# --- the GIF ------------------------------------------------------------------------------------------------


def decode(gif: bytes) -> tuple[Image.Image, list[Image.Image]]:
    image = Image.open(io.BytesIO(gif))
    frames = []
    for index in range(frame_count(image)):
        image.seek(index)
        frames.append(image.convert("RGB"))
    image.seek(0)
    return image, frames


def read_digits(style: CountdownStyle, frame: Image.Image, day_digits: int = 2) -> str:
    """Read the timer back by matching each digit cell against the style's glyphs, pixel for pixel."""
    face = load_face(style)
    glyphs = {digit: glyph.convert("RGB") for digit, glyph in face.digits.items()}
    text = ""
    for left, top in face.cells(day_digits):
        cell = frame.crop((left, top, left + face.cell[0], top + face.cell[1]))
        matches = [d for d, glyph in glyphs.items() if ImageChops.difference(cell, glyph).getbbox() is None]
        assert len(matches) == 1, f"cell at {left},{top} matches {matches}"
        text += matches[0]
    return text


def test_animated_gif_shape(style: CountdownStyle) -> None:
    gif = render_countdown(style, NOW + timedelta(days=3, hours=4, minutes=5, seconds=6), NOW)
    image = Image.open(io.BytesIO(gif))
    assert image.format == "GIF"
    assert image.mode == "P"
    assert image.size == (600, 120)
    assert frame_count(image) == 60
    assert "loop" not in image.info  # plays once and rests on its last frame: it never counts up again
    assert b"NETSCAPE2.0" not in gif
    for index in range(frame_count(image)):
        image.seek(index)
        assert image.info["duration"] == 1000
    assert len(image.getpalette() or []) <= 16 * 3  # drawn on the fixed palette, nothing quantized


def test_first_frame_reads_the_remaining_time(style: CountdownStyle) -> None:
    deadline = parse_deadline("2026-12-24T18:00", BERLIN)
    now = parse_deadline("2026-12-21T15:54:51", BERLIN)
    _, frames = decode(render_countdown(style, deadline, now))
    assert read_digits(style, frames[0]) == "03020509"


def test_first_frame_matches_a_reference_picture(style: CountdownStyle) -> None:
    """The first frame alone is the whole picture: labels on the background, digits in their cells."""
    face = load_face(style)
    reference = face.base()
    for corner, digit in zip(face.cells(2), "01020304", strict=True):
        reference.paste(face.digits[digit], corner)
    _, frames = decode(render_countdown(style, NOW + timedelta(days=1, hours=2, minutes=3, seconds=4), NOW))
    assert ImageChops.difference(frames[0], reference.convert("RGB")).getbbox() is None
    background = frames[0].getpixel((2, 2))
    assert background == (0x1D, 0x1D, 0x1F)
    assert (255, 255, 255) in {colour for _, colour in frames[0].getcolors() or []}


def test_consecutive_frames_differ_in_the_seconds_cell_only(style: CountdownStyle) -> None:
    _, frames = decode(render_countdown(style, NOW + timedelta(days=1, hours=2, minutes=3, seconds=59), NOW))
    face = load_face(style)
    seconds = face.cells(2)[-2:]
    cell = (seconds[0][0], seconds[0][1], seconds[1][0] + face.cell[0], seconds[1][1] + face.cell[1])
    for index, (before, after) in enumerate(itertools.pairwise(frames)):
        box = ImageChops.difference(before, after).getbbox()
        assert box is not None
        assert cell[0] <= box[0] and cell[1] <= box[1] and box[2] <= cell[2] and box[3] <= cell[3]
        assert read_digits(style, after) == f"010203{58 - index:02d}"


def test_minutes_roll_over_within_the_frames(style: CountdownStyle) -> None:
    _, frames = decode(render_countdown(style, NOW + timedelta(hours=1, seconds=2), NOW))
    assert [read_digits(style, frame) for frame in frames[:4]] == [
        "00010002",
        "00010001",
        "00010000",
        "00005959",
    ]


def test_timer_stops_at_zero_and_rests_there(style: CountdownStyle) -> None:
    image, frames = decode(render_countdown(style, NOW + timedelta(seconds=5, milliseconds=500), NOW))
    assert frame_count(image) == 6
    assert "loop" not in image.info  # plays once, so it rests on zero instead of counting up again
    assert [read_digits(style, frame)[-2:] for frame in frames] == ["05", "04", "03", "02", "01", "00"]


def test_hundred_days_and_more_get_a_third_digit(style: CountdownStyle) -> None:
    _, frames = decode(render_countdown(style, NOW + timedelta(days=150, hours=1), NOW))
    assert read_digits(style, frames[0], day_digits=3) == "150010000"
    _, frames = decode(render_countdown(style, NOW + timedelta(days=5000), NOW))
    assert read_digits(style, frames[0], day_digits=3) == "999000000"


def test_expired_image_after_the_deadline(style: CountdownStyle) -> None:
    deadline = NOW - timedelta(seconds=1)
    gif = render_countdown(style, deadline, NOW)
    image, frames = decode(gif)
    assert frame_count(image) == 1
    assert not getattr(image, "is_animated", False)
    assert image.size == (600, 120)
    assert gif == render_countdown(style, deadline, deadline)
    other = CountdownStyle(font_path=FONT, expired_text="SEE YOU NEXT YEAR")
    assert ImageChops.difference(frames[0], decode(render_countdown(other, deadline, NOW))[1][0]).getbbox()


def test_exactly_at_the_deadline_is_expired(style: CountdownStyle) -> None:
    deadline = NOW + timedelta(seconds=10)
    assert frame_count(render_countdown(style, deadline, deadline)) == 1
    assert frame_count(render_countdown(style, deadline, deadline - timedelta(seconds=1))) == 2


def test_frame_count_and_size_follow_the_style() -> None:
    small = CountdownStyle(
        font_path=FONT, width=300, height=60, digit_size=30, label_size=9, frame_count=10, expired_size=20
    )
    image, frames = decode(render_countdown(small, NOW + timedelta(hours=2), NOW))
    assert image.size == (300, 60)
    assert frame_count(image) == 10
    assert read_digits(small, frames[9]) == "00015951"


def test_render_refuses_naive_clocks(style: CountdownStyle) -> None:
    with pytest.raises(DeadlineError, match="timezone-aware"):
        render_countdown(style, NOW, datetime(2026, 6, 1))
