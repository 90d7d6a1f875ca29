"""Countdown GIF render time and size: Opentime's renderer against a naive per-request one.

    python3 bench/countdown.py [--renders 21] [--naive-renders 5] [--frames 60]

Part (b) of issue 4: median time and bytes of a 60-frame 600x120 countdown GIF (target <= 25 ms), beside a
naive renderer written here, shaped like the open-source timer servers: each frame drawn in RGB with
``ImageDraw.text`` and every frame left to Pillow to quantize when the GIF is saved. The naive renderer
gets its fonts loaded once, which flatters it. Part (d), throughput over HTTP, needs the image route and
lives with it; the per-render ratio printed here is its upper bound on the rendering side.
"""

from __future__ import annotations

import argparse
import io
import statistics
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from app.countdown.clock import remaining
from app.images.timer import CountdownStyle, load_face, render_countdown

PROJECT_FONT = Path(__file__).resolve().parent.parent / "static" / "fonts" / "DejaVuSans-Bold.ttf"
SYSTEM_FONT = Path("/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf")
START = datetime(2026, 12, 21, 15, 54, 51, tzinfo=UTC)
DEADLINE = datetime(2026, 12, 24, 17, 0, tzinfo=UTC)

Renderer = Callable[[CountdownStyle, datetime, datetime], bytes]


@lru_cache(maxsize=8)
def naive_font(path: str, size: int) -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(path, size)


def naive_render(style: CountdownStyle, deadline: datetime, now: datetime) -> bytes:
    """What timer servers do: draw every frame in RGB, then let Pillow quantize each one."""
    digits = naive_font(style.font_path, style.digit_size)
    labels = naive_font(style.font_path, style.label_size)
    group = style.width / 4
    frames = []
    for index in range(style.frame_count):
        image = Image.new("RGB", (style.width, style.height), style.background)
        draw = ImageDraw.Draw(image)
        values = remaining(deadline, now + timedelta(seconds=index))
        for column, (value, label) in enumerate(zip(values, style.labels, strict=True)):
            centre = group * (column + 0.5)
            draw.text((centre, 50), f"{value:02d}", fill=style.digit_color, font=digits, anchor="ms")
            draw.text((centre, 80), label, fill=style.label_color, font=labels, anchor="ms")
        frames.append(image)
    out = io.BytesIO()
    frames[0].save(out, format="GIF", save_all=True, append_images=frames[1:], duration=1000, loop=0)
    return out.getvalue()


def measure(renderer: Renderer, style: CountdownStyle, renders: int) -> tuple[list[float], int]:
    renderer(style, DEADLINE, START)  # warm-up: glyph cache, font loading
    timings, size = [], 0
    for index in range(renders):
        now = START + timedelta(seconds=7 * index)
        started = time.perf_counter()
        gif = renderer(style, DEADLINE, now)
        timings.append((time.perf_counter() - started) * 1000)
        size = len(gif)
    return timings, size


def check(gif: bytes, frames: int) -> None:
    image = Image.open(io.BytesIO(gif))
    count = getattr(image, "n_frames", 1)
    if image.size != (600, 120) or count != frames:
        raise SystemExit(f"unexpected GIF: {image.size}, {count} frames")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--renders", type=int, default=21, help="timed renders of Opentime's renderer")
    parser.add_argument("--naive-renders", type=int, default=5, help="timed renders of the naive renderer")
    parser.add_argument("--frames", type=int, default=60)
    parser.add_argument("--font", type=Path, default=PROJECT_FONT if PROJECT_FONT.exists() else SYSTEM_FONT)
    args = parser.parse_args()
    style = CountdownStyle(font_path=str(args.font), frame_count=args.frames)
    started = time.perf_counter()
    load_face(style)
    print(f"glyphs for one style (once, cached): {(time.perf_counter() - started) * 1000:.1f} ms")
    check(render_countdown(style, DEADLINE, START), args.frames)
    check(naive_render(style, DEADLINE, START), args.frames)
    rows = {
        "opentime": measure(render_countdown, style, args.renders),
        "naive": measure(naive_render, style, args.naive_renders),
    }
    print(f"{args.frames}-frame {style.width}x{style.height} countdown GIF, font {args.font.name}")
    print(f"{'renderer':<10}{'renders':>9}{'median ms':>11}{'min ms':>9}{'max ms':>9}{'bytes':>9}")
    for name, (timings, size) in rows.items():
        median = statistics.median(timings)
        print(f"{name:<10}{len(timings):>9}{median:>11.1f}{min(timings):>9.1f}{max(timings):>9.1f}{size:>9,}")
    ours = statistics.median(rows["opentime"][0])
    ratio = statistics.median(rows["naive"][0]) / ours
    verdict = "met" if ours <= 25 else "MISSED"
    print(f"target <= 25 ms: {verdict}; naive/opentime per render: {ratio:.0f}x")
    print(f"ratio={ratio:.1f}")


if __name__ == "__main__":
    main()
