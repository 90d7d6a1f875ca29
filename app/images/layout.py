"""The parsed layout of an ``image`` block and the per-request render input derived from it (pure).

A request turns the block's templates into concrete values on the event loop (sandboxed Jinja, tens of
microseconds): the text of each text layer and the file of each picture layer. Those values, the
layout's digest, the format and the scale are everything the pixels depend on, so their hash is the
content key: two requests with the same key get the same bytes, whoever the recipient is.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, NamedTuple

from app.render.templates import TextTemplate

ImageFormat = Literal["png", "jpg", "gif"]
FORMATS: tuple[ImageFormat, ...] = ("png", "jpg", "gif")
SCALES = (1, 2)
CONTENT_TYPES: dict[str, bytes] = {"png": b"image/png", "jpg": b"image/jpeg", "gif": b"image/gif"}
OPEN_CONTEXT = frozenset({"now", "fetch_class"})

Color = tuple[int, int, int, int]
Align = Literal["left", "center", "right"]
VAlign = Literal["top", "middle", "bottom"]
Fit = Literal["contain", "cover"]


class Box(NamedTuple):
    x: int
    y: int
    width: int
    height: int

    def scaled(self, scale: int) -> Box:
        return Box(self.x * scale, self.y * scale, self.width * scale, self.height * scale)


@dataclass(frozen=True, slots=True)
class TextLayer:
    text: TextTemplate
    box: Box
    font: Path
    size: int
    min_size: int  # shrink-to-fit stops here, then the last line is cut with an ellipsis
    color: Color
    align: Align
    valign: VAlign
    wrap: bool
    max_lines: int
    line_height: float


@dataclass(frozen=True, slots=True)
class PictureLayer:
    src: TextTemplate  # a path under ``base``; URLs are never fetched
    base: Path
    box: Box
    fit: Fit
    radius: int


Layer = TextLayer | PictureLayer


@dataclass(frozen=True, slots=True)
class ImageBlock:
    name: str
    width: int
    height: int
    background: Color
    background_image: Path | None
    radius: int
    outside: Color  # what shows around rounded corners in formats without alpha (jpg, gif)
    layers: tuple[Layer, ...]
    budget_s: float
    cache_ttl_s: float | None
    max_bytes: int
    digest: str  # hash of the layout and the files it names: part of every content key
    fallbacks: Mapping[tuple[ImageFormat, int], bytes]  # (format, scale) -> pre-rendered fallback image

    @property
    def open_dependent(self) -> bool:
        """True when a text reads the open context (``now``, ``fetch_class``), not only the profile."""
        return any(not OPEN_CONTEXT.isdisjoint(layer_vars(layer)) for layer in self.layers)


def layer_vars(layer: Layer) -> frozenset[str]:
    return layer.text.variables if isinstance(layer, TextLayer) else layer.src.variables


class RenderSpec(NamedTuple):
    """Everything one render needs; ``values`` holds a str per text layer, a Path or None per picture."""

    block: ImageBlock
    fmt: ImageFormat
    scale: int
    values: tuple[str | Path | None, ...]
    key: str


def prepare(block: ImageBlock, context: Mapping[str, Any], fmt: ImageFormat, scale: int) -> RenderSpec:
    """Evaluate the block's templates; raises ``TemplateError`` when a text cannot be rendered."""
    values = tuple(_value(layer, context) for layer in block.layers)
    digest = hashlib.sha256(f"{block.digest}|{fmt}|{scale}".encode())
    for value in values:
        digest.update(b"\x00" + (b"-" if value is None else str(value).encode()))
    return RenderSpec(block, fmt, scale, values, digest.hexdigest()[:32])


def _value(layer: Layer, context: Mapping[str, Any]) -> str | Path | None:
    if isinstance(layer, TextLayer):
        return layer.text.render(context).strip()
    return picture_path(layer.base, layer.src.render(context).strip())


def picture_path(base: Path, name: str) -> Path | None:
    """The file ``name`` under ``base``, or None for empty values, URLs and escapes from ``base``."""
    if not name or "://" in name or name.startswith("//"):
        return None
    path = Path(os.path.normpath(base / name))  # pure: no file system access on the event loop
    return path if path.is_relative_to(base) and path != base else None
