"""The parsed layout of an ``image`` block and the per-request render input derived from it (pure).

A request turns the block's templates into concrete values on the event loop (sandboxed Jinja, tens of
microseconds): the text of each text layer and the file of each picture layer. Those values, the
layout's digest, the format and the scale are everything the pixels depend on, so their hash is the
content key: two requests with the same key get the same bytes, whoever the recipient is.

Missing data degrades one layer, not the image: the block's per-field ``defaults`` fill gaps in the
profile first; a text whose data is still missing (or unusable: a number format applied to text)
draws its layer's ``default``, or is left out, and the rest of the image renders. Each such layer is
reported (``FellBack``), for authors' previews and throttled logs.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Literal, NamedTuple

from app.render.templates import MissingValue, TextTemplate

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
    default: str | None = None  # drawn when the text's data is missing or unusable; None: left out


@dataclass(frozen=True, slots=True)
class PictureLayer:
    src: TextTemplate  # a path under ``base``; URLs are never fetched
    base: Path
    box: Box
    fit: Fit
    radius: int


Layer = TextLayer | PictureLayer


@dataclass(frozen=True, slots=True)
class TextStyle:
    """How a text layer is drawn, without its template: plain data."""

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
class PictureStyle:
    box: Box
    fit: Fit
    radius: int


@dataclass(frozen=True, slots=True)
class Drawing:
    """Everything about a block the pixels depend on besides the values: plain, hashable data.

    Renders run in worker processes: this (a few hundred bytes pickled) crosses to them, never the
    block with its templates and pre-rendered fallbacks. Workers key their caches of static parts
    (the background, the rounded-corner mask) by it.
    """

    width: int
    height: int
    background: Color
    background_image: Path | None
    radius: int
    outside: Color  # what shows around rounded corners in formats without alpha (jpg, gif)
    layers: tuple[TextStyle | PictureStyle, ...]


def style_of(layer: Layer) -> TextStyle | PictureStyle:
    if isinstance(layer, PictureLayer):
        return PictureStyle(layer.box, layer.fit, layer.radius)
    return TextStyle(
        layer.box,
        layer.font,
        layer.size,
        layer.min_size,
        layer.color,
        layer.align,
        layer.valign,
        layer.wrap,
        layer.max_lines,
        layer.line_height,
    )


@dataclass(frozen=True, slots=True)
class ImageBlock:
    name: str
    drawing: Drawing  # size, background, corners and how each layer is drawn
    layers: tuple[Layer, ...]
    budget_s: float
    cache_ttl_s: float | None
    max_bytes: int
    digest: str  # hash of the layout and the files it names: part of every content key
    fallbacks: Mapping[tuple[ImageFormat, int], bytes]  # (format, scale) -> pre-rendered fallback image
    defaults: Mapping[str, Any] = dataclasses.field(default_factory=dict)  # per-field, under the profile
    decider: Any = None  # variants and rules (app.decisions), None for a block without
    link: str | None = None  # where /click/<block>/0 goes when this image (variant) was shown

    @property
    def width(self) -> int:
        return self.drawing.width

    @property
    def height(self) -> int:
        return self.drawing.height

    @property
    def radius(self) -> int:
        return self.drawing.radius

    @property
    def background(self) -> Color:
        return self.drawing.background

    @property
    def open_dependent(self) -> bool:
        """True when a text reads the open context (``now``, ``fetch_class``), not only the profile."""
        return any(not OPEN_CONTEXT.isdisjoint(layer_vars(layer)) for layer in self.layers)


def layer_vars(layer: Layer) -> frozenset[str]:
    return layer.text.variables if isinstance(layer, TextLayer) else layer.src.variables


class FellBack(NamedTuple):
    """A layer drawn without its data: which, why, and what was drawn instead."""

    layer: int  # index in the block's layers
    source: str  # the layer's template, to find it in blocks.toml
    problem: str  # "missing <field>" or "bad value (<error type>)": never the value itself
    drawn: str  # "default" or "left out"

    def describe(self) -> str:
        return f"layers[{self.layer}] {self.source!r}: {self.problem}, {self.drawn}"


class RenderSpec(NamedTuple):
    """Everything one render needs; ``values`` holds a str per text layer, a Path or None per picture."""

    block: ImageBlock
    fmt: ImageFormat
    scale: int
    values: tuple[str | Path | None, ...]
    key: str
    fell_back: tuple[FellBack, ...] = ()

    @property
    def job(self) -> RenderJob:
        return RenderJob(self.block.drawing, self.fmt, self.scale, self.values)


class RenderJob(NamedTuple):
    """One render's input, plain data that pickles cheaply for a worker process."""

    drawing: Drawing
    fmt: ImageFormat
    scale: int
    values: tuple[str | Path | None, ...]


def prepare(block: ImageBlock, context: Mapping[str, Any], fmt: ImageFormat, scale: int) -> RenderSpec:
    """Evaluate the block's templates over the context (``profile`` completed by the block's defaults);
    a layer whose data is missing or unusable gets its default or is left out (``fell_back``)."""
    if block.defaults:
        context = {**context, "profile": with_defaults(context.get("profile") or {}, block.defaults)}
    values: list[str | Path | None] = []
    fell_back: list[FellBack] = []
    for index, layer in enumerate(block.layers):
        try:
            values.append(_value(layer, context))
        except Exception as exc:  # any error in one layer's template is that layer's, not the image's
            default = layer.default if isinstance(layer, TextLayer) else None
            values.append(default)
            drawn = "left out" if default is None else "default"
            fell_back.append(FellBack(index, _source(layer), _problem(exc), drawn))
    digest = hashlib.sha256(f"{block.digest}|{fmt}|{scale}".encode())
    for value in values:
        digest.update(b"\x00" + (b"-" if value is None else str(value).encode()))
    return RenderSpec(block, fmt, scale, tuple(values), digest.hexdigest()[:32], tuple(fell_back))


def fell_back_layers(block: ImageBlock, profile: Mapping[str, Any], now: datetime) -> tuple[FellBack, ...]:
    """The layers an open at ``now`` would draw without their data, for authors (render, preview)."""
    return prepare(block, {"profile": profile, "now": now, "fetch_class": "direct"}, "png", 1).fell_back


def with_defaults(profile: Mapping[str, Any], defaults: Mapping[str, Any]) -> dict[str, Any]:
    """The profile with each missing (or null) field taken from ``defaults``, nested tables merged."""
    merged = dict(profile)
    for name, default in defaults.items():
        value = merged.get(name)
        if value is None:
            merged[name] = default
        elif isinstance(value, Mapping) and isinstance(default, Mapping):
            merged[name] = with_defaults(value, default)
    return merged


def _value(layer: Layer, context: Mapping[str, Any]) -> str | Path | None:
    if isinstance(layer, TextLayer):
        return layer.text.render(context).strip()
    return picture_path(layer.base, layer.src.render(context).strip())


def _source(layer: Layer) -> str:
    return layer.text.source if isinstance(layer, TextLayer) else layer.src.source


def _problem(exc: Exception) -> str:
    if isinstance(exc, MissingValue):
        return f"missing {exc.name!r}"
    return f"bad value ({type(exc).__name__})"


def picture_path(base: Path, name: str) -> Path | None:
    """The file ``name`` under ``base``, or None for empty values, URLs and escapes from ``base``."""
    if not name or "://" in name or name.startswith("//"):
        return None
    path = Path(os.path.normpath(base / name))  # pure: no file system access on the event loop
    return path if path.is_relative_to(base) and path != base else None
