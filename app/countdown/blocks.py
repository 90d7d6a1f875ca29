"""``countdown`` blocks in ``blocks.toml``: parsed, checked and their fallbacks pre-rendered at load.

A deadline is fixed for the campaign (``deadline`` + ``zone``: every recipient who opens in the same
second shares one GIF) or read from the profile (``deadline_field``, a dotted path, with an optional
``zone_field``).
The style is checked by loading its glyphs at 1x and 2x (``load_face``), so a timer that does not fit is
a ``CampaignError`` naming the file and the block, never a broken image at open time; the GIF's
pre-encoded frames are made then too (``timer_gif.splicer``), so the first open pays for none of it.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson

from app.countdown.clock import CountdownError, DeadlineSource, instant_us
from app.errors import CampaignError
from app.images import render
from app.images.blocks import FONTS, _choice, _color, _int, _no_unknown, _picture_file
from app.images.layout import FORMATS, SCALES, ImageFormat
from app.images.timer import CountdownStyle
from app.images.timer_gif import splicer

DEFAULT_MAX_BYTES = 500_000
MAX_BYTES_CAP = 4_000_000
_BLOCK_KEYS = frozenset(
    {"kind", "deadline", "zone", "deadline_field", "zone_field", "budget_ms"}
    | {"max_bytes", "fallback", "width", "height", "font", "background", "digit_color", "label_color"}
    | {"digit_size", "label_size", "labels", "frames", "expired_text", "expired_size"}
)


@dataclass(frozen=True, slots=True)
class CountdownBlock:
    """A parsed countdown; ``styles`` maps a scale (1 or 2) to the style drawn at that scale."""

    name: str
    source: DeadlineSource
    field_path: tuple[str, ...]  # dotted deadline_field
    zone_path: tuple[str, ...]  # dotted zone_field (empty: none)
    styles: Mapping[int, CountdownStyle]
    fixed: datetime | None  # the campaign-wide deadline, resolved once at load
    fixed_us: int | None  # the same in microseconds since the epoch (``clock.instant_us``)
    budget_s: float
    max_bytes: int
    digest: str  # hash of the block's table: part of every content key
    fallbacks: Mapping[tuple[ImageFormat, int], bytes]

    @property
    def shared(self) -> bool:
        """A campaign-wide deadline: the same pixels for every recipient."""
        return self.source.shared

    def deadline(self, profile: Mapping[str, Any] | None = None) -> datetime:
        """The deadline instant; raises ``DeadlineError`` when the profile has no readable one."""
        if self.fixed is not None:
            return self.fixed
        assert self.source.field is not None
        values = {self.source.field: lookup(profile or {}, self.field_path)}
        if self.source.zone_field is not None:
            values[self.source.zone_field] = lookup(profile or {}, self.zone_path)
        return self.source.resolve(values)

    def deadline_us(self, profile: Mapping[str, Any] | None = None) -> int:
        """``deadline`` in microseconds since the epoch (a campaign-wide one without any work)."""
        return self.fixed_us if self.fixed_us is not None else instant_us(self.deadline(profile))


def lookup(profile: Mapping[str, Any], path: tuple[str, ...]) -> Any:
    """The value at a dotted path, or None when any step is missing."""
    value: Any = profile
    for step in path:
        if not isinstance(value, Mapping) or step not in value:
            return None
        value = value[step]
    return value


def countdown_block(
    name: str, spec: dict[str, Any], static_dir: Path, where: str, budget_ms: int
) -> CountdownBlock:
    """Parse ``[blocks.<name>]`` with ``kind = "countdown"``."""
    if "bucket_seconds" in spec:
        raise CampaignError(
            f"{where} bucket_seconds: no longer used (a countdown is drawn for every second): remove it"
        )
    _no_unknown(spec, _BLOCK_KEYS, where)
    static = static_dir.resolve()
    source = _source(spec, where)
    style = _style(spec, static, where)
    styles = {1: style, 2: _doubled(style, where)}
    for scale, scaled in styles.items():
        try:
            splicer(scaled)  # loads the face: glyphs, fit, then the pre-encoded frames
        except CountdownError as exc:
            raise CampaignError(f"{where}: {exc}" + (" (at @2x)" if scale == 2 else "")) from None
    fixed = source.resolve() if source.shared else None
    fallback = spec.get("fallback")
    fallback_path = None if fallback is None else _picture_file(static, fallback, f"{where} fallback")
    return CountdownBlock(
        name=name,
        source=source,
        field_path=_dotted(source.field),
        zone_path=_dotted(source.zone_field),
        styles=styles,
        fixed=fixed,
        fixed_us=None if fixed is None else instant_us(fixed),
        budget_s=_int(spec.get("budget_ms", budget_ms), 1, 10_000, f"{where} budget_ms") / 1000,
        max_bytes=_int(spec.get("max_bytes", DEFAULT_MAX_BYTES), 1000, MAX_BYTES_CAP, f"{where} max_bytes"),
        digest=hashlib.sha256(orjson.dumps(spec, option=orjson.OPT_SORT_KEYS)).hexdigest()[:32],
        fallbacks=_fallbacks(style, fallback_path, where),
    )


def _source(spec: dict[str, Any], where: str) -> DeadlineSource:
    at, field = spec.get("deadline"), spec.get("deadline_field")
    if (at is None) == (field is None):
        raise CampaignError(f"{where}: set exactly one of deadline (fixed) or deadline_field (per recipient)")
    for key in ("deadline", "zone", "deadline_field", "zone_field"):
        if key in spec and (not isinstance(spec[key], str) or not spec[key]):
            raise CampaignError(f"{where} {key}: expected a non-empty string")
    if at is not None and "zone_field" in spec:
        raise CampaignError(f"{where}: zone_field only applies with deadline_field")
    try:
        return DeadlineSource(at=at, field=field, zone=spec.get("zone"), zone_field=spec.get("zone_field"))
    except CountdownError as exc:
        raise CampaignError(f"{where}: {exc}") from None


def _style(spec: dict[str, Any], static: Path, where: str) -> CountdownStyle:
    font = _choice(spec.get("font", "bold"), tuple(FONTS), f"{where} font")
    labels = spec.get("labels", ["DAYS", "HOURS", "MINUTES", "SECONDS"])
    if not isinstance(labels, list) or len(labels) != 4 or not all(isinstance(x, str) for x in labels):
        raise CampaignError(f"{where} labels: expected four strings (days, hours, minutes, seconds)")
    for key in ("background", "digit_color", "label_color"):
        if key in spec:
            _color(spec[key], f"{where} {key}")
            if len(spec[key]) != 7:
                raise CampaignError(f"{where} {key}: a countdown colour must be opaque (#rrggbb)")
    options = {k: spec[k] for k in ("background", "digit_color", "label_color", "expired_text") if k in spec}
    sizes = {k: spec[k] for k in ("width", "height", "digit_size", "label_size", "expired_size") if k in spec}
    for key, value in sizes.items():
        _int(value, 1, 10_000, f"{where} {key}")
    frames = _int(spec.get("frames", 60), 1, 120, f"{where} frames")
    try:
        return CountdownStyle(
            font_path=str(static / FONTS[font]), labels=tuple(labels), frame_count=frames, **options, **sizes
        )
    except CountdownError as exc:
        raise CampaignError(f"{where}: {exc}") from None


def _doubled(style: CountdownStyle, where: str) -> CountdownStyle:
    """The @2x style: every dimension doubled, so the picture is the same at twice the pixels."""
    sizes = ("width", "height", "digit_size", "label_size", "expired_size")
    try:
        return dataclasses.replace(style, **{name: getattr(style, name) * 2 for name in sizes})
    except CountdownError as exc:
        raise CampaignError(f"{where}: {exc} (at @2x)") from None


def _fallbacks(style: CountdownStyle, path: Path | None, where: str) -> dict[tuple[ImageFormat, int], bytes]:
    """Every (format, scale) fallback, encoded now: the static file, else the plain background."""
    background = _color(style.background, f"{where} background")
    fallbacks = {}
    for fmt in FORMATS:
        for scale in SCALES:
            w, h = style.width * scale, style.height * scale
            try:
                fallbacks[fmt, scale] = (
                    render.plain(w, h, background, fmt) if path is None else render.fitted(path, w, h, fmt)
                )
            except render.RenderError as exc:
                raise CampaignError(f"{where}: {exc}") from None
    return fallbacks


def _dotted(value: str | None) -> tuple[str, ...]:
    return () if value is None else tuple(value.split("."))
