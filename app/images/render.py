"""Pixels: draws an image block's layers and encodes PNG, JPEG or GIF (Pillow stays inside ``app.images``).

``draw`` is pure and takes plain data (``RenderJob``), so it runs in the render worker processes
(``app.content.render_pool``), never on the event loop. Each process keeps what repeats across
recipients, read-only: fonts, pictures scaled into their boxes, each block's background and its
rounded-corner mask; a render copies the background, draws the personal layers and encodes.
"""

from __future__ import annotations

import functools
import io
from pathlib import Path
from typing import Any

from PIL import Image, ImageChops, ImageDraw, ImageFont, ImageOps

from app.errors import OpentimeError
from app.images.layout import (
    Box,
    Color,
    Drawing,
    ImageFormat,
    PictureStyle,
    RenderJob,
    RenderSpec,
    TextStyle,
)

ELLIPSIS = "…"
JPEG_QUALITY = 85
GIF_COLORS = 128
# zlib level 1: a 600x200 banner encodes in ~2.7 ms instead of ~4.1 ms (level 6, Pillow's default)
# for ~12% more bytes (27 KB instead of 24 KB); levels 2-3 cost as much time and save under 3%.
PNG_COMPRESS_LEVEL = 1
PALETTE_COLORS = 256  # an opaque image with at most this many colours is written as a palette PNG
WHITE: Color = (255, 255, 255, 255)
Font = ImageFont.FreeTypeFont
Corner = tuple[int, int, int, int]  # left, top, right, bottom


class RenderError(OpentimeError):
    """A file named by a layout cannot be used (the message says which and why)."""


def render(spec: RenderSpec) -> bytes:
    """The encoded image for one request's values at the requested scale."""
    return draw(spec.job)


def draw(job: RenderJob) -> bytes:
    """``render`` on plain data: what a render worker process is sent."""
    drawing, scale = job.drawing, job.scale
    canvas = _base(drawing, scale).copy()
    for layer, value in zip(drawing.layers, job.values, strict=True):
        if isinstance(layer, TextStyle) and isinstance(value, str):
            _draw_text(canvas, layer, value, scale)
        elif isinstance(layer, PictureStyle) and isinstance(value, Path):
            _draw_picture(canvas, layer, value, scale)
    if drawing.radius:
        _round_corners(canvas, drawing.radius * scale)
    return encode(canvas, job.fmt, drawing.outside)


def encode(canvas: Image.Image, fmt: ImageFormat, outside: Color = WHITE) -> bytes:
    out = io.BytesIO()
    if fmt == "png":
        opaque = canvas.mode != "RGBA" or canvas.getchannel("A").getextrema()[0] == 255
        image = canvas.convert("RGB") if opaque and canvas.mode != "RGB" else canvas
        colours = image.getcolors(PALETTE_COLORS) if image.mode == "RGB" else None
        if colours is not None:  # few colours (flat designs): the same pixels, a third of the data
            image = _palette(image, [colour for _, colour in colours])
        image.save(out, "PNG", compress_level=PNG_COMPRESS_LEVEL)
        return out.getvalue()
    flat = Image.new("RGBA", canvas.size, outside)
    flat.alpha_composite(canvas.convert("RGBA"))
    rgb = flat.convert("RGB")
    if fmt == "jpg":
        rgb.save(out, "JPEG", quality=JPEG_QUALITY)
    else:
        rgb.quantize(colors=GIF_COLORS, method=Image.Quantize.MEDIANCUT).save(out, "GIF")
    return out.getvalue()


def _palette(image: Image.Image, colours: list[Any]) -> Image.Image:
    """``image`` as a palette image of exactly ``colours`` (no dithering, no colour changed)."""
    reference = Image.new("P", (1, 1))
    reference.putpalette([int(channel) for colour in colours for channel in colour])
    return image.quantize(palette=reference, dither=Image.Dither.NONE)


@functools.lru_cache(maxsize=16)  # 0.5 MB for a 600x200 banner, 16 MB for the largest block @2x
def _base(drawing: Drawing, scale: int) -> Image.Image:
    """The block's background (colour and picture), drawn once per block and scale; renders copy it."""
    size = (drawing.width * scale, drawing.height * scale)
    canvas = Image.new("RGBA", size, drawing.background)
    if drawing.background_image is not None:
        canvas.alpha_composite(ImageOps.fit(_picture(drawing.background_image), size))
    return canvas


def plain(width: int, height: int, color: Color, fmt: ImageFormat, *, radius: int = 0) -> bytes:
    canvas = Image.new("RGBA", (width, height), color)
    return encode(_rounded(canvas, radius) if radius else canvas, fmt)


def fitted(path: Path, width: int, height: int, fmt: ImageFormat, *, radius: int = 0) -> bytes:
    """A static file cropped and scaled to the block's size (pre-rendered fallbacks)."""
    canvas = ImageOps.fit(_picture(path), (width, height))
    return encode(_rounded(canvas, radius) if radius else canvas, fmt)


@functools.cache
def blank(fmt: ImageFormat) -> bytes:
    """A 1x1 image for requests that name no known block: transparent where the format allows."""
    return encode(Image.new("RGBA", (1, 1), (255, 255, 255, 0)), fmt)


def check_picture(path: Path) -> tuple[int, int]:
    """Open a picture now (at load) so a broken file is an error naming it, not a blank layer later."""
    return _picture(path).size


def check_font(path: Path) -> None:
    _font(path, 12)


@functools.lru_cache(maxsize=256)
def _font(path: Path, size: int) -> Font:
    try:
        return ImageFont.truetype(str(path), size)
    except OSError as exc:
        raise RenderError(f"font {path}: {exc}") from None


@functools.lru_cache(maxsize=64)
def _picture(path: Path) -> Image.Image:
    try:
        with Image.open(path) as image:
            return image.convert("RGBA")
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        raise RenderError(f"picture {path}: {exc}") from None


def _draw_picture(canvas: Image.Image, layer: PictureStyle, path: Path, scale: int) -> None:
    box = layer.box.scaled(scale)
    try:
        placed = _placed(path, box.width, box.height, layer.fit, layer.radius * scale)
    except RenderError:
        return  # a missing product picture leaves its box empty; the rest of the banner still renders
    x = box.x + (box.width - placed.width) // 2
    y = box.y + (box.height - placed.height) // 2
    canvas.alpha_composite(placed, (x, y))


@functools.lru_cache(maxsize=256)
def _placed(path: Path, width: int, height: int, fit: str, radius: int) -> Image.Image:
    """A picture scaled into its box: product pictures repeat across recipients, so scale each once."""
    picture = _picture(path)
    if fit == "cover":
        placed = ImageOps.fit(picture, (width, height))
    else:
        placed = ImageOps.contain(picture, (width, height))
    return _rounded(placed, radius) if radius else placed


def _draw_text(canvas: Image.Image, layer: TextStyle, text: str, scale: int) -> None:
    if not text:
        return
    box = layer.box.scaled(scale)
    font, lines = _fit(text, layer, box, scale)
    ascent, descent = font.getmetrics()
    step = round((ascent + descent) * layer.line_height)
    total = step * (len(lines) - 1) + ascent + descent
    y = box.y + {"top": 0, "middle": (box.height - total) // 2, "bottom": box.height - total}[layer.valign]
    draw = ImageDraw.Draw(canvas)
    for line in lines:
        free = box.width - font.getlength(line)
        x = box.x + {"left": 0.0, "center": free / 2, "right": free}[layer.align]
        draw.text((x, y), line, font=font, fill=layer.color)
        y += step


def _fit(text: str, layer: TextStyle, box: Box, scale: int) -> tuple[Font, list[str]]:
    """The largest size from ``size`` down to ``min_size`` at which the text fits the box (binary search).

    The first probe is ``size`` (most texts fit as designed); when one line is too wide, the next is
    the size its width scales to, then its neighbour: two or three probes instead of five.
    """
    low, high = layer.min_size * scale, layer.size * scale
    best: tuple[Font, list[str]] | None = None
    size = high
    while low <= high:
        font = _font(layer.font, size)
        lines = _lines(text, font, box.width, layer.wrap)
        if _fits(lines, font, box, layer):
            best, low = (font, lines), size + 1
            size = (low + high) // 2
            continue
        high = size - 1
        guess = _size_at_width(font, lines[0], box.width, size) if len(lines) == 1 else None
        size = (low + high) // 2 if guess is None else min(max(guess, low), high)
    if best is not None:
        return best
    font = _font(layer.font, layer.min_size * scale)
    return font, _cut(_lines(text, font, box.width, layer.wrap), font, box, layer)


def _size_at_width(font: Font, line: str, width: int, size: int) -> int:
    """The size at which ``line`` (drawn at ``size`` with ``font``) would be about ``width`` wide."""
    return int(size * width / max(font.getlength(line), 1.0))


def _lines(text: str, font: Font, width: int, wrap: bool) -> list[str]:
    if not wrap:
        return [" ".join(text.split())]
    lines: list[str] = []
    for paragraph in text.splitlines() or [""]:
        line = ""
        for word in paragraph.split():
            candidate = f"{line} {word}" if line else word
            if line and font.getlength(candidate) > width:
                lines.append(line)
                line = word
            else:
                line = candidate
        lines.append(line)
    return lines


def _fits(lines: list[str], font: Font, box: Box, layer: TextStyle) -> bool:
    if len(lines) > layer.max_lines or _height(len(lines), font, layer) > box.height:
        return False
    return all(font.getlength(line) <= box.width for line in lines)


def _height(count: int, font: Font, layer: TextStyle) -> int:
    ascent, descent = font.getmetrics()
    return round((ascent + descent) * layer.line_height) * (count - 1) + ascent + descent


def _cut(lines: list[str], font: Font, box: Box, layer: TextStyle) -> list[str]:
    """Too long even at the smallest size: keep the lines that fit and end the last with an ellipsis."""
    keep = max(1, min(layer.max_lines, len(lines)))
    while keep > 1 and _height(keep, font, layer) > box.height:
        keep -= 1
    kept = [_ellipsize(line, font, box.width) for line in lines[:keep]]
    if keep < len(lines) and not kept[-1].endswith(ELLIPSIS):
        kept[-1] = _ellipsize(kept[-1] + ELLIPSIS, font, box.width)
    return kept


def _ellipsize(line: str, font: Font, width: int) -> str:
    if font.getlength(line) <= width:
        return line
    while line and font.getlength(line.rstrip(ELLIPSIS) + ELLIPSIS) > width:
        line = line.rstrip(ELLIPSIS)[:-1]
    return line.rstrip() + ELLIPSIS


def _rounded(image: Image.Image, radius: int) -> Image.Image:
    """Transparent corners: the alpha channel times a rounded-rectangle mask."""
    rgba = image.convert("RGBA") if image.mode != "RGBA" else image.copy()
    _round_corners(rgba, radius)
    return rgba


def _round_corners(rgba: Image.Image, radius: int) -> None:
    """Multiply the alpha of the four corner squares (in place) by the rounded-rectangle mask: the
    rest of the mask is opaque, so the other pixels (all but ~1% of a banner) are left alone."""
    for box, mask in _corners(rgba.width, rgba.height, radius):
        corner = rgba.crop(box)
        corner.putalpha(ImageChops.multiply(corner.getchannel("A"), mask))
        rgba.paste(corner, box)


@functools.lru_cache(maxsize=64)
def _corners(width: int, height: int, radius: int) -> tuple[tuple[Corner, Image.Image], ...]:
    """The corner squares of a ``width`` x ``height`` rounded rectangle and the mask of each."""
    mask = Image.new("L", (width, height), 0)
    ImageDraw.Draw(mask).rounded_rectangle((0, 0, width - 1, height - 1), radius, fill=255)
    side_x, side_y = min(radius + 1, width), min(radius + 1, height)
    boxes = {
        (0, 0, side_x, side_y),
        (width - side_x, 0, width, side_y),
        (0, height - side_y, side_x, height),
        (width - side_x, height - side_y, width, height),
    }
    return tuple((box, mask.crop(box)) for box in sorted(boxes))
