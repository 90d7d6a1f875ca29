"""Countdown GIFs true to the second: CPU per distinct second, GIF bytes, and cached throughput over HTTP.

    python3 -m bench.countdown [--seconds 10] [--connections 50] [--rounds 3] [--builds 600]

Part 5 of issue 10, from the repository root (loopback only; servers pinned to CPU 0, wrk to CPU 1):

(a) CPU per distinct second: the thread CPU time of building the demo timer's GIF for ``--builds``
    consecutive numbers of seconds left, none built before (each is a new content key), at 1x and @2x;
    beside it, the first build of a style never seen before (its pre-encoded frames, then the GIF);
(b) GIF bytes of the demo timer (median and largest of those builds; target: no more than the 25.9 KB
    of before, when the same 60 frames were written by Pillow's GIF writer once per 60 s bucket: that
    file is written here too and its bytes printed beside them, "Pillow B");
(c) the cached countdown over HTTP: ``python3 -m app serve`` answering the demo campaign's campaign-wide
    timer (``/v1/<shared token>/img/countdown.gif``: a new GIF every second, built once and shared by every
    request in that second), against a bare Starlette route returning the same GIF bytes
    (``Response(body, media_type="image/gif")`` on uvicorn with the same settings), both running, measured
    in alternating rounds in the same run; target ratio >= 0.7. Before measuring, one served GIF is
    decoded: 60 frames, no loop, and frame 0 is the picture of the seconds left at the request.

Prints a table; the last line is ``ratio=<c> cpu_ms=<a, 1x median> bytes=<b, 1x largest>``, the ratio
being the median over quiet rounds (other processes took at most 10% of the server's core). Needs wrk,
taskset and two CPUs. The machine is shared: the table says how busy the server's core was otherwise.
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from pathlib import Path

import httpx
from PIL import Image, ImageChops, ImageDraw, ImageFont

from app.campaigns.loader import load_campaigns
from app.config import PROJECT_ROOT
from app.countdown.clock import remaining, seconds_left
from app.images.timer import CountdownStyle, day_digits, digit_text, first_frame, load_face
from app.images.timer_gif import countdown_gif
from bench.amp_list import (
    PROCS,
    BenchError,
    Checkout,
    Results,
    WrkResult,
    describe,
    free_port,
    log,
    preflight,
    require_clean,
    run_wrk,
    start_server,
    wait_quiet,
)

START = datetime(2026, 12, 21, 15, 54, 51, tzinfo=UTC)
DEADLINE = datetime(2026, 12, 24, 17, 0, tzinfo=UTC)
BYTES_BEFORE = 25_900  # the demo timer's GIF as rendered per 60 s bucket with Pillow's writer
CPU_TARGET_MS = 2.0
RATIO_TARGET = 0.7
QUIET = 0.10  # a round counts when other processes took at most this share of the server's core

Renderer = Callable[[CountdownStyle, datetime, datetime], bytes]


# --- renderers to compare with (also used by bench/images.py) ---------------------------------------------


@lru_cache(maxsize=8)
def naive_font(path: str, size: int) -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(path, size)


def naive_render(style: CountdownStyle, deadline: datetime, now: datetime) -> bytes:
    """What open-source timer servers do: draw every frame in RGB, then let Pillow quantize each one."""
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


def opentime_render(style: CountdownStyle, deadline: datetime, now: datetime) -> bytes:
    """Opentime's GIF for a request at ``now``."""
    return countdown_gif(style, seconds_left(deadline, now))


def pillow_writer_gif(style: CountdownStyle, left: int) -> bytes:
    """The same frames written by Pillow's GIF writer (looping), as the renderer did before the splicer."""
    face, digits = load_face(style), day_digits(left)
    frames = [
        first_frame(face, digit_text(left - i, digits)) for i in range(min(style.frame_count, left + 1))
    ]
    out = io.BytesIO()
    frames[0].save(
        out, format="GIF", save_all=True, append_images=frames[1:], duration=1000, optimize=False, loop=0
    )
    return out.getvalue()


def measure(renderer: Renderer, style: CountdownStyle, renders: int) -> tuple[list[float], int]:
    """Wall milliseconds of ``renders`` renders 7 s apart (after a warm-up), and the last one's bytes."""
    renderer(style, DEADLINE, START)
    timings, size = [], 0
    for index in range(renders):
        now = START + timedelta(seconds=7 * index)
        started = time.perf_counter()
        gif = renderer(style, DEADLINE, now)
        timings.append((time.perf_counter() - started) * 1000)
        size = len(gif)
    return timings, size


# --- (a) and (b): CPU per distinct second, bytes ------------------------------------------------------------


@dataclass
class Builds:
    label: str
    cpu_ms: list[float]  # thread CPU per build
    sizes: list[int]
    first_ms: float  # the style's first build: its pre-encoded frames, then the GIF
    pillow_bytes: int  # the first GIF's frames through Pillow's writer, as before the splicer

    def row(self) -> str:
        cpu = sorted(self.cpu_ms)
        p99 = cpu[min(len(cpu) - 1, round(0.99 * (len(cpu) - 1)))]
        return (
            f"{self.label:<28}{statistics.median(cpu):>8.2f}{p99:>8.2f}{self.first_ms:>9.1f}"
            f"{statistics.median(self.sizes):>10,.0f}{max(self.sizes):>10,}"
            f"{self.pillow_bytes:>11,}"
        )


def fresh_style(style: CountdownStyle) -> CountdownStyle:
    """The same look with a colour one step off: a style whose frames were never encoded in this process."""
    red = int(style.background[1:3], 16)
    return dataclasses.replace(style, background=f"#{red ^ 1:02x}{style.background[3:]}")


def builds(label: str, style: CountdownStyle, count: int) -> Builds:
    start = seconds_left(DEADLINE, START)
    assert start is not None
    cold = fresh_style(style)
    began = time.thread_time()
    countdown_gif(cold, start)
    first_ms = (time.thread_time() - began) * 1000
    countdown_gif(style, start + count + 60)  # the measured style's frames are ready, as after a load
    cpu, sizes = [], []
    for left in range(start + count, start, -1):  # consecutive seconds, as a running timer meets them
        began = time.thread_time()
        body = countdown_gif(style, left)
        cpu.append((time.thread_time() - began) * 1000)
        sizes.append(len(body))
    return Builds(label, cpu, sizes, first_ms, len(pillow_writer_gif(style, start + count)))


def check_gif(style: CountdownStyle, body: bytes, lefts: tuple[int, int]) -> None:
    """The served GIF plays 60 frames once, and frame 0 shows one of ``lefts`` (before, after the request)."""
    image = Image.open(io.BytesIO(body))
    frames = getattr(image, "n_frames", 1)
    if frames != style.frame_count or "loop" in image.info or image.size != (style.width, style.height):
        raise SystemExit(f"unexpected GIF: {image.size}, {frames} frames, loop {image.info.get('loop')}")
    shown = image.convert("RGB")
    face = load_face(style)
    for left in lefts:
        expected = first_frame(face, digit_text(left, day_digits(left))).convert("RGB")
        if ImageChops.difference(shown, expected).getbbox() is None:
            return
    raise SystemExit(f"frame 0 shows none of the seconds left around the request: {lefts}")


# --- (c): HTTP --------------------------------------------------------------------------------------------


@dataclass
class Http:
    runs: dict[str, list[WrkResult]]  # "baseline" and "opentime", one per round each
    notes: list[str]


def run_http(style: CountdownStyle, deadline: datetime, args: argparse.Namespace) -> Http:
    """Both servers up, then alternating measured runs: baseline, opentime, baseline, opentime, ..."""
    from bench.images import Setup  # not at the top: bench.images imports this module

    runs: dict[str, list[WrkResult]] = {"baseline": [], "opentime": []}
    notes = Results(this=Checkout("opentime", PROJECT_ROOT))
    with tempfile.TemporaryDirectory(prefix="opentime-bench-countdown-") as tmp:
        setup = Setup(Path(tmp), 10)
        cmd = [sys.executable, "-m", "app", "serve", "--config", str(setup.config)]
        opentime = start_server("opentime", cmd, setup.port, setup.folder / "opentime.log", args.server_cpu)
        path = setup.timer.read_text().strip()
        before = seconds_left(deadline, datetime.now(UTC))
        response = httpx.get(opentime.base_url + path, timeout=30)
        after = seconds_left(deadline, datetime.now(UTC))
        if response.status_code != 200 or "x-opentime-fallback" in response.headers:
            raise SystemExit(f"opentime timer: {response.status_code} {response.headers}")
        assert before is not None and after is not None
        check_gif(style, response.content, (after, before))
        log(
            f"served GIF checked: 60 frames, plays once, frame 0 = {after}-{before} s left; headers:"
            f" cdn-cache-control {response.headers['cdn-cache-control']!r}"
        )
        body = setup.folder / "timer.gif"
        body.write_bytes(response.content)
        port = free_port()
        base_cmd = [sys.executable, "-m", "bench.countdown", "serve-baseline", "--port", str(port)]
        baseline = start_server(
            "baseline", [*base_cmd, "--body", str(body)], port, setup.folder / "b.log", args.server_cpu
        )
        servers = {"baseline": baseline, "opentime": opentime}
        try:
            for round_ in range(1, args.rounds + 1):
                for name, server in servers.items():
                    label = f"{name} round {round_}"
                    wait_quiet(args, notes, label)
                    result = run_wrk(
                        server.base_url,
                        setup.timer,
                        seconds=args.seconds,
                        connections=args.connections,
                        cpu=args.wrk_cpu,
                        check=True,
                        label=label,
                        server_pid=server.pid,
                    )
                    require_clean(result)
                    log(describe(result))
                    runs[name].append(result)
        finally:
            PROCS.stop_all()
    return Http(runs, notes.notes)


def others_share(result: WrkResult) -> float:
    """The share of the server's core that other processes used during the run."""
    return max(0.0, (result.core_busy or 0.0) - (result.server_cpu or 0.0))


def cpu_per_request(result: WrkResult) -> float:
    """Microseconds of server CPU per response."""
    return (result.server_cpu or 0.0) * result.duration_s * 1e6 / max(result.requests, 1)


def serve_baseline(port: int, body: Path) -> None:
    from bench.images import baseline_app, serve  # not at the top: bench.images imports this module

    serve(baseline_app(body.read_bytes(), "image/gif"), port)


# --- report -----------------------------------------------------------------------------------------------


def report(rows: list[Builds], http: Http | None) -> None:
    print(f"\n(a), (b) building a new second's GIF ({rows[0].label.split()[0]} demo timer, 60 frames)")
    print(f"{'':<28}{'cpu ms':>8}{'p99':>8}{'first ms':>9}{'bytes':>10}{'max':>10}{'Pillow B':>11}")
    for row in rows:
        print(row.row())
    cpu = statistics.median(rows[0].cpu_ms)
    largest = max(rows[0].sizes)
    print(f"CPU per distinct second (1x, median): {cpu:.2f} ms (target <= {CPU_TARGET_MS} ms)")
    print(f"GIF bytes (1x, largest): {largest:,} (target <= {BYTES_BEFORE:,}, the Pillow-written one)")
    if http is None:
        print(f"ratio=- cpu_ms={cpu:.2f} bytes={largest}")
        return
    print(f"\n(c) HTTP, wrk on another CPU, the server on one CPU ({len(http.runs['opentime'])} rounds)")
    print(
        f"{'run':<22}{'req/s':>10}{'p50 ms':>9}{'p99 ms':>9}{'server CPU':>12}{'others':>8}"
        f"{'CPU us/req':>12}{'ratio':>7}{'CPU ratio':>11}"
    )
    ratios, cpu_ratios, quiet = [], [], []
    for base, ours in zip(http.runs["baseline"], http.runs["opentime"], strict=True):
        ratios.append(ours.rps / base.rps)
        cpu_ratios.append(cpu_per_request(base) / cpu_per_request(ours))
        quiet.append(others_share(base) <= QUIET and others_share(ours) <= QUIET)
        for result, shown in ((base, ("", "")), (ours, (f"{ratios[-1]:.2f}", f"{cpu_ratios[-1]:.2f}"))):
            others = others_share(result)
            print(
                f"{result.label:<22}{result.rps:>10,.0f}{result.p50_ms:>9.2f}{result.p99_ms:>9.2f}"
                f"{result.server_cpu or 0:>12.0%}{others:>8.0%}{cpu_per_request(result):>12.1f}"
                f"{shown[0]:>7}{shown[1]:>11}"
            )
    for note in http.notes:
        print(note)
    counted = [i for i, ok in enumerate(quiet) if ok] or list(range(len(ratios)))
    which = f"median of {len(counted)} quiet rounds" if any(quiet) else "NOISY: no quiet round, median of all"
    ratio = statistics.median(ratios[i] for i in counted)
    cpu_ratio = statistics.median(cpu_ratios[i] for i in counted)
    print(f"quiet round: other processes took <= {QUIET:.0%} of the server's core in both of its runs")
    print(f"cached countdown / bare Starlette, same bytes: {ratio:.2f} ({which}; target >= {RATIO_TARGET})")
    print(
        f"server CPU per request, bare Starlette / countdown: {cpu_ratio:.2f} ({which}; what the req/s"
        " ratio is on an idle core, and less moved by other load on it)"
    )
    print(f"ratio={ratio:.2f} cpu_ms={cpu:.2f} bytes={largest}")


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command")
    base = sub.add_parser("serve-baseline", help="(internal) the bare Starlette route")
    base.add_argument("--port", type=int, required=True)
    base.add_argument("--body", type=Path, required=True)
    parser.add_argument("--builds", type=int, default=600, help="distinct seconds built in (a)")
    parser.add_argument("--seconds", type=int, default=10, help="each measured wrk run")
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=3, help="baseline/opentime pairs in (c)")
    parser.add_argument("--no-http", action="store_true", help="only (a) and (b)")
    parser.add_argument("--server-cpu", type=int, default=0)
    parser.add_argument("--wrk-cpu", type=int, default=1)
    parser.add_argument("--wait-idle", type=int, default=60, help="max wait for idle CPUs before a run")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if args.command == "serve-baseline":
        serve_baseline(args.port, args.body)
        return 0
    campaigns = load_campaigns(
        PROJECT_ROOT / "amp_templates",
        PROJECT_ROOT / "static",
        default_budget_ms=150,
        public_base_url="https://amp.example.com",
    )
    block = campaigns["demo"].countdowns["countdown"]
    rows = [builds(f"{scale}x {s.width}x{s.height}", s, args.builds) for scale, s in block.styles.items()]
    http = None
    if not args.no_http:
        preflight(args)
        try:
            http = run_http(block.styles[1], block.deadline(), args)
        except BenchError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
    report(rows, http)
    return 0


if __name__ == "__main__":
    sys.exit(main())
