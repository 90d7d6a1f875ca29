"""Countdown timers: deadline arithmetic, time buckets and animated GIF rendering.

Deadlines are instants. A deadline is either fixed for the campaign or read from a profile value, written
as ISO 8601 with a UTC offset (``2026-12-24T18:00+01:00``, ``...Z``) or as a local wall time plus an IANA
zone (``2026-12-24T18:00`` in ``Europe/Berlin``). Local wall times become instants through ``zoneinfo``,
and remaining time is always computed between two aware instants, so a countdown across a DST change is
exact (23 or 25 hours in a day, never a naive subtraction of wall times).

Local times that a DST change skips or repeats follow RFC 5545 (iCalendar) section 3.3.5, which is what
calendar users already expect, and which is PEP 495's ``fold=0``:

- a time in the spring-forward gap (``02:30`` on 2026-03-29 in Berlin) is read with the offset in force
  *before* the gap, so it lands as far after the gap's start as it was written: 03:30 CEST;
- a time in the fall-back overlap (``02:30`` on 2026-10-25 in Berlin) is its *first* occurrence (CEST).

A campaign-wide timer renders once per time bucket: ``bucket_start(now, seconds, deadline=...)`` gives the
instant to render at (the same for every request in the bucket) and the instant the render stays valid
until, which a CDN may use as its TTL. ``render_countdown(style, deadline, bucket.start)`` then draws frame
*i* at ``bucket.start + i`` seconds.

Rendering draws straight onto a fixed 16-colour palette ("P" images): digit glyphs are rendered once per
style (``load_face``, cached) and pasted per frame, so no frame is ever quantized. Frame 0 is a complete
image on its own (classic Outlook shows only the first frame).
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import NamedTuple
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from PIL import Image, ImageColor, ImageDraw, ImageFont

from app.errors import OpentimeError

FRAME_MS = 1000
MAX_DAYS = 999
_SECOND = timedelta(seconds=1)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# Palette layout: 0 is the background, then anti-aliasing ramps towards the digit and the label colours.
_DIGIT_BASE, _DIGIT_SHADES = 1, 8
_LABEL_BASE, _LABEL_SHADES = 9, 7


class CountdownError(OpentimeError, ValueError):
    """Base class for countdown errors; the message says which value is wrong and why."""


class DeadlineError(CountdownError):
    """A deadline (fixed or from a profile) or its time zone cannot be read."""


class StyleError(CountdownError):
    """A countdown style is invalid, or its font cannot be loaded or does not fit the image."""


# --- deadlines --------------------------------------------------------------------------------------------


def get_zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise DeadlineError(
            f"unknown time zone {name!r} (expected an IANA name like 'Europe/Berlin')"
        ) from None


def resolve_local(wall: datetime, tz: ZoneInfo) -> datetime:
    """The UTC instant of a naive local wall time: gaps use the offset before them, overlaps the first."""
    return wall.replace(tzinfo=tz, fold=0).astimezone(UTC)


def parse_deadline(value: str, tz: str | None = None) -> datetime:
    """Parse an ISO 8601 deadline into a UTC instant.

    An explicit UTC offset in ``value`` wins over ``tz``; a value without one needs ``tz``.
    """
    text = value.strip()
    if len(text) <= 10:
        raise DeadlineError(f"deadline {value!r} needs a time of day, e.g. '2026-12-24T18:00'")
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise DeadlineError(f"deadline {value!r} is not an ISO 8601 date and time") from None
    try:
        if parsed.tzinfo is not None:
            return parsed.astimezone(UTC)
        if tz is None:
            raise DeadlineError(f"deadline {value!r} has no UTC offset and no time zone is configured")
        return resolve_local(parsed, get_zone(tz))
    except OverflowError:
        # 0001-01-01T00:00+01:00 is a valid ISO 8601 text whose UTC instant is before year 1.
        raise DeadlineError(f"deadline {value!r} is outside the years 1 to 9999 in UTC") from None


@dataclass(frozen=True, slots=True)
class DeadlineSource:
    """Where a countdown's deadline comes from: ``at`` (fixed for the campaign) or a profile ``field``.

    ``zone`` applies to values without a UTC offset; ``zone_field`` names a profile value holding the
    recipient's own zone, which overrides ``zone`` when present.
    """

    at: str | None = None
    field: str | None = None
    zone: str | None = None
    zone_field: str | None = None

    def __post_init__(self) -> None:
        if (self.at is None) == (self.field is None):
            raise DeadlineError("a countdown deadline needs exactly one of 'at' or 'field'")
        if self.zone is not None:
            get_zone(self.zone)
        if self.at is not None:
            parse_deadline(self.at, self.zone)

    @property
    def shared(self) -> bool:
        """True when every recipient sees the same timer (one render per bucket for all)."""
        return self.at is not None

    def resolve(self, profile: Mapping[str, object] | None = None) -> datetime:
        if self.at is not None:
            return parse_deadline(self.at, self.zone)
        assert self.field is not None
        return deadline_from_profile(profile or {}, self.field, self._zone_for(profile or {}))

    def _zone_for(self, profile: Mapping[str, object]) -> str | None:
        own = profile.get(self.zone_field) if self.zone_field else None
        if own is None or own == "":
            return self.zone
        if not isinstance(own, str):
            raise DeadlineError(f"profile field {self.zone_field!r} must be a time zone name")
        return own


def deadline_from_profile(profile: Mapping[str, object], field: str, tz: str | None = None) -> datetime:
    if field not in profile or profile[field] is None:
        raise DeadlineError(f"profile has no deadline field {field!r}")
    value = profile[field]
    if not isinstance(value, str):
        raise DeadlineError(f"profile field {field!r} must be an ISO 8601 string, not {type(value).__name__}")
    try:
        return parse_deadline(value, tz)
    except DeadlineError as exc:
        raise DeadlineError(f"profile field {field!r}: {exc}") from None


class Remaining(NamedTuple):
    days: int
    hours: int
    minutes: int
    seconds: int


def _require_aware(**instants: datetime) -> None:
    for name, value in instants.items():
        if value.tzinfo is None or value.utcoffset() is None:
            raise DeadlineError(f"{name} must be timezone-aware (an instant), got naive {value.isoformat()}")


def remaining_seconds(deadline: datetime, now: datetime) -> int:
    """Whole seconds from ``now`` to ``deadline`` (floored, never negative)."""
    _require_aware(deadline=deadline, now=now)
    return max(0, (deadline - now) // _SECOND)


def split_seconds(total: int) -> Remaining:
    minutes, seconds = divmod(total, 60)
    hours, minutes = divmod(minutes, 60)
    days, hours = divmod(hours, 24)
    return Remaining(days, hours, minutes, seconds)


def remaining(deadline: datetime, now: datetime) -> Remaining:
    return split_seconds(remaining_seconds(deadline, now))


class Bucket(NamedTuple):
    """``start``: the instant to render at. ``until``: when the render goes stale (None: never)."""

    start: datetime
    until: datetime | None


def bucket_start(now: datetime, bucket_seconds: int, deadline: datetime | None = None) -> Bucket:
    """The time bucket holding ``now``: buckets are aligned on the Unix epoch, so all servers agree.

    With a ``deadline``, a bucket never outlives it, and from the deadline on the bucket is the deadline
    itself with no end: the expired image does not change.
    """
    if isinstance(bucket_seconds, bool) or not isinstance(bucket_seconds, int) or bucket_seconds < 1:
        raise CountdownError(f"bucket_seconds must be a positive whole number, got {bucket_seconds!r}")
    _require_aware(now=now)
    size = timedelta(seconds=bucket_seconds)
    start = _EPOCH + ((now - _EPOCH) // size) * size
    if deadline is None:
        return Bucket(start, start + size)
    _require_aware(deadline=deadline)
    if now >= deadline:
        return Bucket(deadline.astimezone(UTC), None)
    return Bucket(start, min(start + size, deadline.astimezone(UTC)))


# --- style ------------------------------------------------------------------------------------------------


def _rgb(name: str, value: str) -> tuple[int, int, int]:
    try:
        colour = ImageColor.getrgb(value)
    except (ValueError, AttributeError):
        raise StyleError(f"{name} {value!r} is not a colour (use '#rrggbb')") from None
    if len(colour) != 3:
        raise StyleError(f"{name} {value!r} must be opaque (no alpha)")
    return colour[0], colour[1], colour[2]


def _check_range(name: str, value: int, low: int, high: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise StyleError(f"{name} must be a whole number from {low} to {high}, got {value!r}")


@dataclass(frozen=True, slots=True)
class CountdownStyle:
    """How a countdown looks; hashable, so rendered glyphs are cached per style."""

    font_path: str
    width: int = 600
    height: int = 120
    background: str = "#1d1d1f"
    digit_color: str = "#ffffff"
    label_color: str = "#a1a1a6"
    digit_size: int = 64
    label_size: int = 16
    labels: tuple[str, str, str, str] = ("DAYS", "HOURS", "MINUTES", "SECONDS")
    frame_count: int = 60
    expired_text: str = "OFFER ENDED"
    expired_size: int = 40

    def __post_init__(self) -> None:
        if not isinstance(self.font_path, str) or not self.font_path:
            raise StyleError("font_path must name a TrueType/OpenType font file")
        _check_range("width", self.width, 100, 1600)
        _check_range("height", self.height, 40, 800)
        _check_range("frame_count", self.frame_count, 1, 120)
        for name in ("digit_size", "label_size", "expired_size"):
            _check_range(name, getattr(self, name), 6, self.height)
        for name in ("background", "digit_color", "label_color"):
            _rgb(name, getattr(self, name))
        if not isinstance(self.labels, tuple) or len(self.labels) != 4:
            raise StyleError("labels must be four strings: days, hours, minutes, seconds")
        if not all(isinstance(label, str) and len(label) <= 20 for label in self.labels):
            raise StyleError("each label must be a string of at most 20 characters")
        if not isinstance(self.expired_text, str) or not 0 < len(self.expired_text.strip()) <= 60:
            raise StyleError("expired_text must be a non-empty string of at most 60 characters")

    def palette(self) -> bytes:
        background = _rgb("background", self.background)
        ramps = [
            (_rgb("digit_color", self.digit_color), _DIGIT_SHADES),
            (_rgb("label_color", self.label_color), _LABEL_SHADES),
        ]
        colours = [background]
        for target, shades in ramps:
            colours += [_mix(background, target, step / shades) for step in range(1, shades + 1)]
        return bytes(channel for colour in colours for channel in colour)


def _mix(a: tuple[int, int, int], b: tuple[int, int, int], t: float) -> tuple[int, int, int]:
    return round(a[0] + (b[0] - a[0]) * t), round(a[1] + (b[1] - a[1]) * t), round(a[2] + (b[2] - a[2]) * t)


# --- glyphs and layout (once per style) -------------------------------------------------------------------


def _font(path: str, size: int) -> ImageFont.FreeTypeFont:
    try:
        return ImageFont.truetype(path, size)
    except OSError as exc:
        raise StyleError(f"cannot load font {path!r}: {exc}") from None


def _to_palette(mask: Image.Image, base: int, shades: int, palette: bytes) -> Image.Image:
    """Map an anti-aliasing mask onto one colour ramp of the fixed palette."""
    lut = [0 if (level := round(alpha * shades / 255)) == 0 else base + level - 1 for alpha in range(256)]
    indexed = Image.frombytes("P", mask.size, mask.point(lut).tobytes())
    indexed.putpalette(palette)
    return indexed


def _text_mask(
    font: ImageFont.FreeTypeFont, text: str, box: tuple[int, int, int, int] | None = None
) -> Image.Image:
    """White-on-black mask of ``text``: tight, or in ``box`` (font coordinates) centred horizontally."""
    left, top, right, bottom = box or tuple(math.floor(v) for v in font.getbbox(text))
    mask = Image.new("L", (max(1, right - left), max(1, bottom - top)))
    offset = ((right - left - font.getlength(text)) / 2 if box else -left, -top)
    ImageDraw.Draw(mask).text(offset, text, fill=255, font=font)
    return mask


class Face(NamedTuple):
    """A style's pre-rendered pieces: digit glyphs (all one cell size), labels, layout, the expired GIF."""

    style: CountdownStyle
    digits: Mapping[str, Image.Image]
    cell: tuple[int, int]
    labels: Sequence[Image.Image]
    label_top: int
    digit_top: int
    expired_gif: bytes

    def cells(self, day_digits: int) -> list[tuple[int, int]]:
        """Top-left corner of every digit cell: days, then two each for hours, minutes and seconds."""
        group = self.style.width / 4
        corners = []
        for index, count in enumerate((day_digits, 2, 2, 2)):
            left = round(group * (index + 0.5) - count * self.cell[0] / 2)
            corners += [(left + n * self.cell[0], self.digit_top) for n in range(count)]
        return corners

    def base(self) -> Image.Image:
        frame = Image.new("P", (self.style.width, self.style.height), 0)
        frame.putpalette(self.style.palette())
        group = self.style.width / 4
        for index, label in enumerate(self.labels):
            frame.paste(label, (round(group * (index + 0.5) - label.width / 2), self.label_top))
        return frame


@lru_cache(maxsize=64)
def load_face(style: CountdownStyle) -> Face:
    """Load the style's fonts, pre-render its glyphs and check that everything fits (raises StyleError)."""
    palette = style.palette()
    digit_font = _font(style.font_path, style.digit_size)
    label_font = _font(style.font_path, style.label_size)
    _, top, _, bottom = (math.floor(v) for v in digit_font.getbbox("0123456789"))
    width = math.ceil(max(digit_font.getlength(d) for d in "0123456789"))
    box = (0, top, width, bottom)
    digits = {
        d: _to_palette(_text_mask(digit_font, d, box), _DIGIT_BASE, _DIGIT_SHADES, palette)
        for d in "0123456789"
    }
    rows = _label_rows(label_font, style.labels)
    labels = [_label(label_font, text, rows, palette) for text in style.labels]
    gap = max(2, round(style.digit_size * 0.16))
    total = (bottom - top) + gap + (rows[1] - rows[0])
    if total > style.height:
        raise StyleError(f"digits and labels need {total}px of height, the image has {style.height}px")
    group = style.width // 4
    if 3 * width > group or max(label.width for label in labels) > group:
        raise StyleError(f"three digits or a label do not fit in {group}px: reduce digit_size or label_size")
    digit_top = (style.height - total) // 2
    label_top = digit_top + bottom - top + gap
    expired = _expired_gif(style, palette)
    return Face(style, digits, (width, bottom - top), labels, label_top, digit_top, expired)


def _label_rows(font: ImageFont.FreeTypeFont, texts: Sequence[str]) -> tuple[int, int]:
    """Top and bottom shared by all labels, so they sit on one baseline."""
    boxes = [font.getbbox(text) for text in texts if text] or [font.getbbox("X")]
    return math.floor(min(b[1] for b in boxes)), math.ceil(max(b[3] for b in boxes))


def _label(font: ImageFont.FreeTypeFont, text: str, rows: tuple[int, int], palette: bytes) -> Image.Image:
    width = max(1, math.ceil(font.getlength(text)))
    mask = _text_mask(font, text, (0, rows[0], width, rows[1]))
    return _to_palette(mask, _LABEL_BASE, _LABEL_SHADES, palette)


def _expired_gif(style: CountdownStyle, palette: bytes) -> bytes:
    font = _font(style.font_path, style.expired_size)
    text = _to_palette(_text_mask(font, style.expired_text.strip()), _DIGIT_BASE, _DIGIT_SHADES, palette)
    if text.width > style.width or text.height > style.height:
        raise StyleError(f"expired_text {style.expired_text!r} does not fit: reduce expired_size")
    image = Image.new("P", (style.width, style.height), 0)
    image.putpalette(palette)
    image.paste(text, ((style.width - text.width) // 2, (style.height - text.height) // 2))
    return _encode([image], loop=False)


# --- rendering --------------------------------------------------------------------------------------------


def _encode(frames: list[Image.Image], *, loop: bool) -> bytes:
    out = io.BytesIO()
    extra = {"loop": 0} if loop else {}
    frames[0].save(
        out, format="GIF", save_all=True, append_images=frames[1:], duration=FRAME_MS, optimize=False, **extra
    )
    return out.getvalue()


def digit_text(total_seconds: int, day_digits: int) -> str:
    days, hours, minutes, seconds = split_seconds(total_seconds)
    return f"{min(days, MAX_DAYS):0{day_digits}d}{hours:02d}{minutes:02d}{seconds:02d}"


def render_countdown(style: CountdownStyle, deadline: datetime, now: datetime) -> bytes:
    """An animated GIF: frame ``i`` shows the time left at ``now + i`` seconds, one second per frame.

    The animation loops while the timer keeps running past its last frame; when it reaches zero within
    the frames it plays once and rests on zero. From the deadline on it is the style's expired image.
    """
    _require_aware(deadline=deadline, now=now)
    face = load_face(style)
    if now >= deadline:
        return face.expired_gif
    total = remaining_seconds(deadline, now)
    count = min(style.frame_count, total + 1)
    day_digits = 3 if total // 86400 >= 100 else 2
    cells = face.cells(day_digits)
    frames: list[Image.Image] = []
    shown = ""
    frame = face.base()
    for index in range(count):
        text = digit_text(total - index, day_digits)
        frame = frame.copy() if frames else frame
        for corner, old, new in zip(cells, shown or " " * len(text), text, strict=True):
            if old != new:
                frame.paste(face.digits[new], corner)
        frames.append(frame)
        shown = text
    return _encode(frames, loop=count <= total)
