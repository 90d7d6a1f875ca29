"""The report's PNG chart (Pillow): click-through per variant as bars, 95% intervals as whiskers.

One cluster of bars per block (and experiment), a bar per variant coloured by its role (``COLOURS``),
its rate written above it. The y axis starts at 0 and ends a little above the highest whisker, so
bar heights compare like the rates do. Pure: a report and the fonts folder in, PNG bytes out.
"""

from __future__ import annotations

import io
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from app.reports.report import Report, Role, VariantRow, block_label

WIDTH = 960
HEIGHT = 520
LEFT, RIGHT, TOP, BOTTOM = 80, 24, 70, 90  # margins around the plot area
BACKGROUND = (255, 255, 255)
AXIS = (60, 60, 60)
GRID = (225, 225, 225)
TEXT = (30, 30, 30)
WHISKER = (20, 20, 20)
COLOURS: dict[Role, tuple[int, int, int]] = {
    "control": (76, 114, 176),  # blue
    "variant": (221, 132, 82),  # orange
    "holdout": (140, 140, 140),  # grey
    "rule": (85, 168, 104),  # green
}
GRID_STEPS = 5


def plot_box() -> tuple[int, int, int, int]:
    """The plot area (left, top, right, bottom): rate 0 is its bottom edge."""
    return LEFT, TOP, WIDTH - RIGHT, HEIGHT - BOTTOM


def render(report: Report, fonts_dir: Path) -> bytes:
    image = Image.new("RGB", (WIDTH, HEIGHT), BACKGROUND)
    draw = ImageDraw.Draw(image)
    regular = ImageFont.truetype(str(fonts_dir / "DejaVuSans.ttf"), 13)
    bold = ImageFont.truetype(str(fonts_dir / "DejaVuSans-Bold.ttf"), 17)
    title = f"Click-through by variant: {report.campaign} (bars: rate, whiskers: 95% interval)"
    draw.text((LEFT, 22), title, font=bold, fill=TEXT)
    rows = report.variants
    top = axis_top(rows)
    _axes(draw, regular, top)
    if not rows:
        draw.text((LEFT + 20, TOP + 20), "no exposures recorded", font=regular, fill=TEXT)
    else:
        _bars(draw, regular, rows, top)
    _legend(draw, regular)
    out = io.BytesIO()
    image.save(out, format="PNG", optimize=True)
    return out.getvalue()


def axis_top(rows: list[VariantRow]) -> float:
    """The rate at the top of the y axis: 15% above the highest whisker, at least 1%, at most 100%."""
    highest = max((row.interval.high for row in rows), default=0.0)
    return min(max(highest * 1.15, 0.01), 1.0)


def y_of(rate: float, top: float) -> float:
    _, upper, _, lower = plot_box()
    return lower - (lower - upper) * min(rate / top, 1.0)


def _axes(draw: ImageDraw.ImageDraw, font: ImageFont.FreeTypeFont, top: float) -> None:
    left, upper, right, lower = plot_box()
    for step in range(GRID_STEPS + 1):
        rate = top * step / GRID_STEPS
        y = y_of(rate, top)
        if step:
            draw.line([(left, y), (right, y)], fill=GRID)
        label = f"{rate * 100:.1f}%"
        width = draw.textlength(label, font=font)
        draw.text((left - 8 - width, y - 8), label, font=font, fill=TEXT)
    draw.line([(left, upper), (left, lower)], fill=AXIS, width=1)
    draw.line([(left, lower), (right, lower)], fill=AXIS, width=1)


def _bars(
    draw: ImageDraw.ImageDraw, font: ImageFont.FreeTypeFont, rows: list[VariantRow], top: float
) -> None:
    left, _, right, lower = plot_box()
    groups: list[list[VariantRow]] = []
    for row in rows:
        if groups and (groups[-1][0].block, groups[-1][0].experiment) == (row.block, row.experiment):
            groups[-1].append(row)
        else:
            groups.append([row])
    gap = 1  # an empty slot between clusters
    slots = len(rows) + gap * (len(groups) - 1)
    slot = (right - left) / slots
    bar = min(slot * 0.7, 90)
    x = float(left)
    for group in groups:
        start = x
        for row in group:
            centre = x + slot / 2
            _bar(draw, font, row, centre, bar, top)
            x += slot
        name = block_label(group[0].block) + (f" / {group[0].experiment}" if group[0].experiment else "")
        _centred(draw, font, name, (start + x) / 2, lower + 30)
        x += slot * gap


def _bar(
    draw: ImageDraw.ImageDraw,
    font: ImageFont.FreeTypeFont,
    row: VariantRow,
    centre: float,
    width: float,
    top: float,
) -> None:
    _, _, _, lower = plot_box()
    y = y_of(row.ctr, top)
    if lower - y >= 1:
        draw.rectangle([(centre - width / 2, y), (centre + width / 2, lower - 1)], fill=COLOURS[row.role])
    low, high = y_of(row.interval.low, top), y_of(row.interval.high, top)
    cap = max(width / 4, 4)
    draw.line([(centre, low), (centre, high)], fill=WHISKER, width=2)
    draw.line([(centre - cap, high), (centre + cap, high)], fill=WHISKER, width=2)
    draw.line([(centre - cap, low), (centre + cap, low)], fill=WHISKER, width=2)
    _centred(draw, font, f"{row.ctr * 100:.1f}%", centre, high - 20)
    label = row.variant if row.test is None else f"{row.variant} ({_p(row.test.p_value)})"
    _centred(draw, font, label, centre, lower + 8)


def _legend(draw: ImageDraw.ImageDraw, font: ImageFont.FreeTypeFont) -> None:
    x = float(LEFT)
    y = HEIGHT - 30
    for role, colour in COLOURS.items():
        draw.rectangle([(x, y), (x + 12, y + 12)], fill=colour)
        draw.text((x + 18, y - 2), role, font=font, fill=TEXT)
        x += 30 + draw.textlength(role, font=font)


def _centred(draw: ImageDraw.ImageDraw, font: ImageFont.FreeTypeFont, text: str, x: float, y: float) -> None:
    draw.text((x - draw.textlength(text, font=font) / 2, y), text, font=font, fill=TEXT)


def _p(value: float) -> str:
    return "p < 0.001" if value < 0.001 else f"p = {value:.3f}"
