"""``image`` blocks in ``blocks.toml``: parsed and checked at load, fallbacks pre-rendered.

Every mistake (unknown key, box outside the image, missing font or picture, template syntax, caps) is
a ``CampaignError`` naming the file and the block. Files are resolved under the static folder only.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
from pathlib import Path
from typing import Any, get_args

import orjson

from app.errors import CampaignError
from app.images import render
from app.images.layout import (
    FORMATS,
    SCALES,
    Align,
    Box,
    Color,
    Drawing,
    Fit,
    ImageBlock,
    Layer,
    PictureLayer,
    TextLayer,
    VAlign,
    prepare,
    style_of,
)
from app.render.templates import TemplateError, TextTemplate

FONTS = {"regular": "fonts/DejaVuSans.ttf", "bold": "fonts/DejaVuSans-Bold.ttf"}
MAX_SIDE = 2000
MAX_PIXELS = 1_000_000  # at 1x; the @2x variant has four times as many
MAX_BYTES_CAP = 2_000_000
DEFAULT_MAX_BYTES = 300_000
MAX_LAYERS = 20
MAX_TEMPLATE_CHARS = 500
_COLOR = re.compile(r"#([0-9a-fA-F]{6})([0-9a-fA-F]{2})?")
_BLOCK_KEYS = frozenset(
    {"kind", "width", "height", "background", "background_image", "radius", "outside", "budget_ms"}
    | {"cache_ttl_seconds", "fallback", "max_bytes", "layers", "defaults"}
)
_BOX_KEYS = frozenset({"type", "x", "y", "width", "height"})
_TEXT_KEYS = _BOX_KEYS | {"text", "font", "size", "min_size", "color", "align", "valign", "wrap"}
_TEXT_KEYS |= {"max_lines", "line_height", "default"}
MAX_DEFAULTS_BYTES = 10_000
_PICTURE_KEYS = _BOX_KEYS | {"src", "base", "fit", "radius"}


def image_block(name: str, spec: dict[str, Any], static_dir: Path, where: str, budget_ms: int) -> ImageBlock:
    """Parse ``[blocks.<name>]`` with ``kind = "image"``."""
    _no_unknown(spec, _BLOCK_KEYS, where)
    static = static_dir.resolve()
    width = _int(spec.get("width"), 1, MAX_SIDE, f"{where} width")
    height = _int(spec.get("height"), 1, MAX_SIDE, f"{where} height")
    if width * height > MAX_PIXELS:
        raise CampaignError(f"{where}: {width}x{height} is more than {MAX_PIXELS} pixels")
    background_image = spec.get("background_image")
    if background_image is not None:
        background_image = _picture_file(static, background_image, f"{where} background_image")
    layers_spec = spec.get("layers", [])
    if not isinstance(layers_spec, list) or len(layers_spec) > MAX_LAYERS:
        raise CampaignError(f"{where}: layers must be an array of at most {MAX_LAYERS} tables")
    box = Box(0, 0, width, height)
    layers = tuple(_layer(item, static, box, f"{where}.layers[{i}]") for i, item in enumerate(layers_spec))
    ttl = spec.get("cache_ttl_seconds")
    radius = _int(spec.get("radius", 0), 0, min(width, height) // 2, f"{where} radius")
    drawing = Drawing(
        width=width,
        height=height,
        background=_color(spec.get("background", "#ffffff"), f"{where} background"),
        background_image=background_image,
        radius=radius,
        outside=_color(spec.get("outside", "#ffffff"), f"{where} outside"),
        layers=tuple(style_of(layer) for layer in layers),
    )
    block = ImageBlock(
        name=name,
        drawing=drawing,
        layers=layers,
        budget_s=_int(spec.get("budget_ms", budget_ms), 1, 10_000, f"{where} budget_ms") / 1000,
        cache_ttl_s=None if ttl is None else float(_int(ttl, 1, 86_400, f"{where} cache_ttl_seconds")),
        max_bytes=_int(spec.get("max_bytes", DEFAULT_MAX_BYTES), 1000, MAX_BYTES_CAP, f"{where} max_bytes"),
        digest=_digest(spec, background_image),
        fallbacks={},
        defaults=_defaults(spec.get("defaults", {}), f"{where} defaults"),
    )
    fallback = spec.get("fallback")
    fallback_path = None if fallback is None else _picture_file(static, fallback, f"{where} fallback")
    return _with_fallbacks(block, fallback_path, where)


def _with_fallbacks(block: ImageBlock, path: Path | None, where: str) -> ImageBlock:
    """Every (format, scale) fallback, encoded now: serving one must cost nothing and cannot fail.

    The designed fallback is the author's file when the block names one, else the block itself drawn
    with no recipient: its ``defaults`` as the profile, each layer's default where data is missing,
    layers without one left out (a text reading ``now`` too: a fallback is kept for months).
    """
    fallbacks = {}
    for fmt in FORMATS:
        for scale in SCALES:
            w, h, r = block.width * scale, block.height * scale, block.radius * scale
            try:
                if path is None:
                    fallbacks[fmt, scale] = render.render(prepare(block, {"profile": {}}, fmt, scale))
                else:
                    fallbacks[fmt, scale] = render.fitted(path, w, h, fmt, radius=r)
            except render.RenderError as exc:
                raise CampaignError(f"{where}: {exc}") from None
    return dataclasses.replace(block, fallbacks=fallbacks)


def _layer(spec: Any, static: Path, image: Box, where: str) -> Layer:
    if not isinstance(spec, dict):
        raise CampaignError(f"{where}: expected a table")
    kind = spec.get("type")
    box = _box(spec, image, where)
    if kind == "text":
        return _text_layer(spec, static, box, where)
    if kind == "image":
        _no_unknown(spec, _PICTURE_KEYS, where)
        base = _static_path(static, spec.get("base", "."), f"{where} base")
        if not base.is_dir():
            raise CampaignError(f"{where}: base {base} is not a folder under the static folder")
        return PictureLayer(
            src=_template(spec.get("src"), f"{where} src"),
            base=base,
            box=box,
            fit=_choice(spec.get("fit", "contain"), get_args(Fit), f"{where} fit"),
            radius=_int(spec.get("radius", 0), 0, min(box.width, box.height) // 2, f"{where} radius"),
        )
    raise CampaignError(f'{where}: type must be "text" or "image"')


def _text_layer(spec: dict[str, Any], static: Path, box: Box, where: str) -> TextLayer:
    _no_unknown(spec, _TEXT_KEYS, where)
    font_name = _choice(spec.get("font", "regular"), tuple(FONTS), f"{where} font")
    font = static / FONTS[font_name]
    try:
        render.check_font(font)
    except render.RenderError as exc:
        raise CampaignError(f"{where}: {exc}") from None
    size = _int(spec.get("size", 24), 4, 400, f"{where} size")
    line_height = spec.get("line_height", 1.2)
    if (
        isinstance(line_height, bool)
        or not isinstance(line_height, int | float)
        or not 0.8 <= line_height <= 3
    ):
        raise CampaignError(f"{where} line_height: expected a number from 0.8 to 3")
    return TextLayer(
        text=_template(spec.get("text"), f"{where} text"),
        box=box,
        font=font,
        size=size,
        min_size=_int(spec.get("min_size", size), 4, size, f"{where} min_size"),
        color=_color(spec.get("color", "#000000"), f"{where} color"),
        align=_choice(spec.get("align", "left"), get_args(Align), f"{where} align"),
        valign=_choice(spec.get("valign", "top"), get_args(VAlign), f"{where} valign"),
        wrap=_bool(spec.get("wrap", True), f"{where} wrap"),
        max_lines=_int(spec.get("max_lines", 3), 1, 20, f"{where} max_lines"),
        line_height=float(line_height),
        default=_text(spec.get("default"), f"{where} default"),
    )


def _box(spec: dict[str, Any], image: Box, where: str) -> Box:
    x = _int(spec.get("x", 0), 0, image.width - 1, f"{where} x")
    y = _int(spec.get("y", 0), 0, image.height - 1, f"{where} y")
    width = _int(spec.get("width", image.width - x), 1, image.width - x, f"{where} width")
    height = _int(spec.get("height", image.height - y), 1, image.height - y, f"{where} height")
    return Box(x, y, width, height)


def _template(value: Any, where: str) -> TextTemplate:
    if not isinstance(value, str) or len(value) > MAX_TEMPLATE_CHARS:
        raise CampaignError(f"{where}: expected a template string of at most {MAX_TEMPLATE_CHARS} characters")
    try:
        return TextTemplate(value, where=where)
    except TemplateError as exc:
        raise CampaignError(str(exc)) from None


def _text(value: Any, where: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > MAX_TEMPLATE_CHARS:
        raise CampaignError(f"{where}: expected text of at most {MAX_TEMPLATE_CHARS} characters")
    return value


def _defaults(value: Any, where: str) -> dict[str, Any]:
    """Per-field defaults: a table shaped like the profile (``loyalty.points = 0`` nests in TOML)."""
    if not isinstance(value, dict):
        raise CampaignError(f'{where}: expected a table of profile fields, e.g. {{ first_name = "there" }}')
    if not _profile_like(value):  # TOML dates and times are not what a profile holds
        raise CampaignError(f"{where}: values must be text, numbers, booleans, arrays or tables")
    size = len(orjson.dumps(value))
    if size > MAX_DEFAULTS_BYTES:
        raise CampaignError(f"{where}: {size} bytes is more than {MAX_DEFAULTS_BYTES}")
    return value


def _profile_like(value: Any) -> bool:
    if isinstance(value, dict):
        return all(_profile_like(item) for item in value.values())
    if isinstance(value, list):
        return all(_profile_like(item) for item in value)
    return isinstance(value, str | int | float | bool)


def _picture_file(static: Path, value: Any, where: str) -> Path:
    path = _static_path(static, value, where)
    try:
        render.check_picture(path)
    except render.RenderError as exc:
        raise CampaignError(f"{where}: {exc}") from None
    return path


def _static_path(static: Path, value: Any, where: str) -> Path:
    if not isinstance(value, str) or "://" in value:
        raise CampaignError(f"{where}: expected a path under the static folder (URLs are never fetched)")
    path = (static / value).resolve()
    if not path.is_relative_to(static):
        raise CampaignError(f"{where}: {value!r} points outside the static folder")
    return path


def _digest(spec: dict[str, Any], background_image: Path | None) -> str:
    digest = hashlib.sha256(orjson.dumps(spec, option=orjson.OPT_SORT_KEYS))
    if background_image is not None:
        digest.update(background_image.read_bytes())
    return digest.hexdigest()[:32]


def _color(value: Any, where: str) -> Color:
    match = _COLOR.fullmatch(value) if isinstance(value, str) else None
    if match is None:
        raise CampaignError(f"{where}: expected a colour as #rrggbb or #rrggbbaa")
    rgb = bytes.fromhex(match.group(1))
    alpha = int(match.group(2), 16) if match.group(2) else 255
    return rgb[0], rgb[1], rgb[2], alpha


def _choice(value: Any, choices: tuple[str, ...], where: str) -> Any:
    if value not in choices:
        raise CampaignError(f"{where}: expected one of {', '.join(choices)}")
    return value


def _int(value: Any, low: int, high: int, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise CampaignError(f"{where}: expected an integer from {low} to {high}")
    return value


def _bool(value: Any, where: str) -> bool:
    if not isinstance(value, bool):
        raise CampaignError(f"{where}: expected true or false")
    return value


def _no_unknown(spec: dict[str, Any], known: frozenset[str], where: str) -> None:
    unknown = sorted(set(spec) - known)
    if unknown:
        raise CampaignError(f"{where}: unknown key(s) {', '.join(unknown)}")
