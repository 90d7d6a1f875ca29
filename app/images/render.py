"""Pixels: draws an image block's layers and encodes PNG, JPEG or GIF (Pillow stays inside ``app.images``).

Runs in the image worker threads, never on the event loop (Pillow releases the GIL while encoding).
Fonts and pictures are loaded once per process and shared read-only between the threads.
"""

from __future__ import annotations

import functools
import io
from pathlib import Path

from PIL import Image, ImageChops, ImageDraw, ImageFont, ImageOps

from app.errors import OpentimeError
from app.images.layout import Box, Color, ImageFormat, PictureLayer, RenderSpec, TextLayer

ELLIPSIS = "…"
JPEG_QUALITY = 85
GIF_COLORS = 128
WHITE: Color = (255, 255, 255, 255)
Font = ImageFont.FreeTypeFont


class RenderError(OpentimeError):
    """A file named by a layout cannot be used (the message says which and why)."""


def render(spec: RenderSpec) -> bytes:
    """The encoded image for one request's values at the requested scale."""
    block, scale = spec.block, spec.scale
    size = (block.width * scale, block.height * scale)
    canvas = Image.new("RGBA", size, block.background)
    if block.background_image is not None:
        canvas.alpha_composite(ImageOps.fit(_picture(block.background_image), size))
    for layer, value in zip(block.layers, spec.values, strict=True):
        if isinstance(layer, TextLayer) and isinstance(value, str):
            _draw_text(canvas, layer, value, scale)
        elif isinstance(layer, PictureLayer) and isinstance(value, Path):
            _draw_picture(canvas, layer, value, scale)
    if block.radius:
        canvas = _rounded(canvas, block.radius * scale)
    return encode(canvas, spec.fmt, block.outside)


def encode(canvas: Image.Image, fmt: ImageFormat, outside: Color = WHITE) -> bytes:
    out = io.BytesIO()
    if fmt == "png":
        opaque = canvas.mode != "RGBA" or canvas.getchannel("A").getextrema()[0] == 255
        (canvas.convert("RGB") if opaque else canvas).save(out, "PNG")
        return out.getvalue()
    flat = Image.new("RGBA", canvas.size, outside)
    flat.alpha_composite(canvas.convert("RGBA"))
    rgb = flat.convert("RGB")
    if fmt == "jpg":
        rgb.save(out, "JPEG", quality=JPEG_QUALITY)
    else:
        rgb.quantize(colors=GIF_COLORS, method=Image.Quantize.MEDIANCUT).save(out, "GIF")
    return out.getvalue()


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


def _draw_picture(canvas: Image.Image, layer: PictureLayer, path: Path, scale: int) -> None:
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


def _draw_text(canvas: Image.Image, layer: TextLayer, text: str, scale: int) -> None:
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


def _fit(text: str, layer: TextLayer, box: Box, scale: int) -> tuple[Font, list[str]]:
    """The largest size from ``size`` down to ``min_size`` at which the text fits the box (binary search)."""
    low, high = layer.min_size * scale, layer.size * scale
    best: tuple[Font, list[str]] | None = None
    while low <= high:
        size = (low + high) // 2
        font = _font(layer.font, size)
        lines = _lines(text, font, box.width, layer.wrap)
        if _fits(lines, font, box, layer):
            best, low = (font, lines), size + 1
        else:
            high = size - 1
    if best is not None:
        return best
    font = _font(layer.font, layer.min_size * scale)
    return font, _cut(_lines(text, font, box.width, layer.wrap), font, box, layer)


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


def _fits(lines: list[str], font: Font, box: Box, layer: TextLayer) -> bool:
    if len(lines) > layer.max_lines or _height(len(lines), font, layer) > box.height:
        return False
    return all(font.getlength(line) <= box.width for line in lines)


def _height(count: int, font: Font, layer: TextLayer) -> int:
    ascent, descent = font.getmetrics()
    return round((ascent + descent) * layer.line_height) * (count - 1) + ascent + descent


def _cut(lines: list[str], font: Font, box: Box, layer: TextLayer) -> list[str]:
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
    mask = Image.new("L", rgba.size, 0)
    ImageDraw.Draw(mask).rounded_rectangle((0, 0, rgba.width - 1, rgba.height - 1), radius, fill=255)
    rgba.putalpha(ImageChops.multiply(rgba.getchannel("A"), mask))
    return rgba
