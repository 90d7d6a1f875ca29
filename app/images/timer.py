"""Countdown pixels: a timer's style, its glyphs and its frames (the animated GIF is ``timer_gif``).

Rendering draws straight onto a fixed 16-colour palette ("P" images): digit glyphs are rendered once per
style (``load_face``, cached) and pasted, so no frame is ever quantized. ``first_frame`` is the complete
picture for a number of seconds left (classic Outlook shows only a GIF's first frame, and the PNG and
JPEG stills are that frame). The time arithmetic is ``app.countdown.clock``'s.
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import NamedTuple

from PIL import Image, ImageColor, ImageDraw, ImageFont

from app.countdown.clock import MAX_DAYS, StyleError, split_seconds
from app.images import gif
from app.images.layout import ImageFormat
from app.images.render import encode

# Palette layout: 0 is the background, then anti-aliasing ramps towards the digit and the label colours.
_DIGIT_BASE, _DIGIT_SHADES = 1, 8
_LABEL_BASE, _LABEL_SHADES = 9, 7


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
    """A style's pre-rendered pieces: digit glyphs (all one cell size), labels, layout, the ended image."""

    style: CountdownStyle
    digits: Mapping[str, Image.Image]
    cell: tuple[int, int]
    labels: Sequence[Image.Image]
    label_top: int
    digit_top: int
    expired: Image.Image
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
        frame = self.canvas(self.style.width, self.style.height)
        group = self.style.width / 4
        for index, label in enumerate(self.labels):
            frame.paste(label, (round(group * (index + 0.5) - label.width / 2), self.label_top))
        return frame

    def canvas(self, width: int, height: int) -> Image.Image:
        """A blank palette image on the background colour."""
        image = Image.new("P", (width, height), 0)
        image.putpalette(self.style.palette())
        return image


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
    expired = _expired(style, palette)
    expired_gif = gif.header(style.width, style.height, palette)
    expired_gif += gif.frame(expired, 0, 0, delay_ms=0, bits=gif.palette_bits(palette)) + gif.TRAILER
    return Face(style, digits, (width, bottom - top), labels, label_top, digit_top, expired, expired_gif)


def _label_rows(font: ImageFont.FreeTypeFont, texts: Sequence[str]) -> tuple[int, int]:
    """Top and bottom shared by all labels, so they sit on one baseline."""
    boxes = [font.getbbox(text) for text in texts if text] or [font.getbbox("X")]
    return math.floor(min(b[1] for b in boxes)), math.ceil(max(b[3] for b in boxes))


def _label(font: ImageFont.FreeTypeFont, text: str, rows: tuple[int, int], palette: bytes) -> Image.Image:
    width = max(1, math.ceil(font.getlength(text)))
    mask = _text_mask(font, text, (0, rows[0], width, rows[1]))
    return _to_palette(mask, _LABEL_BASE, _LABEL_SHADES, palette)


def _expired(style: CountdownStyle, palette: bytes) -> Image.Image:
    font = _font(style.font_path, style.expired_size)
    text = _to_palette(_text_mask(font, style.expired_text.strip()), _DIGIT_BASE, _DIGIT_SHADES, palette)
    if text.width > style.width or text.height > style.height:
        raise StyleError(f"expired_text {style.expired_text!r} does not fit: reduce expired_size")
    image = Image.new("P", (style.width, style.height), 0)
    image.putpalette(palette)
    image.paste(text, ((style.width - text.width) // 2, (style.height - text.height) // 2))
    return image


# --- frames -----------------------------------------------------------------------------------------------


def day_digits(left: int) -> int:
    """Digits in the days group: two, or three from 100 days on (the layout of a whole GIF)."""
    return 3 if left // 86400 >= 100 else 2


def digit_text(total_seconds: int, day_digits: int) -> str:
    days, hours, minutes, seconds = split_seconds(total_seconds)
    return f"{min(days, MAX_DAYS):0{day_digits}d}{hours:02d}{minutes:02d}{seconds:02d}"


def first_frame(face: Face, text: str, base: Image.Image | None = None) -> Image.Image:
    """The whole picture showing ``text`` (``digit_text``): labels, then every digit in its cell."""
    frame = (base or face.base()).copy()
    for corner, digit in zip(face.cells(len(text) - 6), text, strict=True):
        frame.paste(face.digits[digit], corner)
    return frame


def render_still(style: CountdownStyle, left: int | None, fmt: ImageFormat) -> bytes:
    """The timer at ``left`` seconds (None: ended) as a PNG or JPEG still: the GIF's first frame."""
    face = load_face(style)
    image = face.expired if left is None else first_frame(face, digit_text(left, day_digits(left)))
    if fmt == "png":  # the palette image as it is: smaller and faster than RGB, the same pixels
        out = io.BytesIO()
        image.save(out, "PNG")
        return out.getvalue()
    return encode(image.convert("RGB"), fmt)
