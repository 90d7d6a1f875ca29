"""Dynamic images in one run: render times, cached throughput, shared countdowns against a naive timer server.

    python3 -m bench.images [--seconds 10] [--connections 50] [--recipients 400]

Part of issue 4, from the repository root (loopback only; servers pinned to CPU 0, wrk to CPU 1):

(a) the demo banner's render time per image (median ms) and bytes: PNG and JPEG, 600x200 and @2x;
(b) the demo countdown's GIF build time and bytes (60 frames; ``bench/countdown.py`` measures CPU per
    distinct second and the cached countdown over HTTP);
(c) served-from-cache banner throughput: ``python3 -m app serve`` after every recipient's banner has been
    rendered once, against a bare Starlette route on the same URLs returning a constant image of the same
    size (the amp-list benchmark's baseline, with an image body); target ratio >= 0.7;
(d) a campaign-wide countdown over HTTP: Opentime (one GIF per second, shared) against a naive timer
    server written here, shaped like the open-source ones: a Starlette route that draws every frame in RGB
    with ImageDraw per request and lets Pillow quantize (``bench/countdown.py``'s ``naive_render``);
    target >= 20x;
(e) a burst of first opens (issue 13), never-rendered banners with ``--burst-connections`` (64) in
    flight, the server and its render processes on one core: first wrk's fill phase (closed loop:
    every connection sends again the moment it is answered, so the render queue stays full and the
    bound sheds); the refused renders then drain from the backlog, which gives the render rate the
    pool sustains; then, for each of ``--burst-loads`` (0.5, 0.65, 0.8 of that rate), a paced burst of
    ``--burst`` other never-rendered banners, at most 64 in flight (an asyncio client on wrk's core):
    share of opens answered personal within the banner's 300 ms budget (target >= 95%) and p99
    (target <= 320 ms), beside the bare Starlette route under the same client at the highest pace.

Prints a table; the last line is ``ratio_cache=<c> ratio_timer=<d> burst_personal=<e> burst_p99_ms=<e>``
(the paced burst at the first load).
Needs wrk, taskset and two CPUs.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import orjson
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from app.campaigns.loader import load_campaigns
from app.cli.serve import write_toml
from app.config import PROJECT_ROOT, load_settings
from app.demo import DEMO_SENDER, demo_rows, recipient_id
from app.images import render
from app.images.layout import ImageFormat, prepare
from app.images.timer import CountdownStyle
from app.security.keyring import new_keyring, save_keyring
from app.security.tokens import TokenSigner
from bench.amp_list import (
    PROCS,
    BenchError,
    WrkResult,
    _load_store,
    describe,
    free_port,
    log,
    preflight,
    require_clean,
    run_wrk,
    start_server,
    stop_server,
)
from bench.countdown import measure, naive_render, opentime_render

CAMPAIGNS = load_campaigns(
    PROJECT_ROOT / "amp_templates",
    PROJECT_ROOT / "static",
    default_budget_ms=150,
    public_base_url="https://amp.example.com",
)
DEMO = CAMPAIGNS["demo"]
BUDGET_MS = DEMO.images["banner"].budget_s * 1000
SHED = "opentime_image_renders_shed_total"


# --- (a) and (b): render times ----------------------------------------------------------------------------


def banner_rows(runs: int) -> list[tuple[str, float, int]]:
    """Each timed render is a different recipient's banner (a cache would make them free)."""
    block = DEMO.images["banner"]
    contexts = [
        {"profile": orjson.loads(raw), "now": datetime.now(UTC), "fetch_class": "direct"}
        for _, raw in demo_rows(runs + 1)
    ]
    rows = []
    formats: tuple[ImageFormat, ...] = ("png", "jpg")
    for fmt in formats:
        for scale in (1, 2):
            specs = [prepare(block, c, fmt, scale) for c in contexts]
            render.render(specs[0])  # warm-up: fonts, pictures
            timings, size = [], 0
            for spec in specs[1:]:
                started = time.perf_counter()
                size = len(render.render(spec))
                timings.append((time.perf_counter() - started) * 1000)
            label = f"banner {block.width * scale}x{block.height * scale} {fmt.upper()}"
            rows.append((label, statistics.median(timings), size))
    return rows


def countdown_rows(runs: int, naive_runs: int) -> list[tuple[str, float, int]]:
    style = DEMO.countdowns["countdown"].styles[1]
    rows = []
    for name, renderer, count in (("opentime", opentime_render, runs), ("naive", naive_render, naive_runs)):
        timings, size = measure(renderer, style, count)
        label = f"countdown {style.width}x{style.height} GIF {style.frame_count} frames, {name}"
        rows.append((label, statistics.median(timings), size))
    return rows


# --- servers used as baselines (run as subprocesses of this script) ---------------------------------------


def baseline_app(body: bytes, media_type: str) -> Starlette:
    async def constant(request: Request) -> Response:
        return Response(body, media_type=media_type)

    return Starlette(routes=[Route("/v1/{token}/img/{name}", constant), Route("/readyz", ready)])


def naive_app() -> Starlette:
    style = CountdownStyle(font_path=str(PROJECT_ROOT / "static" / "fonts" / "DejaVuSans-Bold.ttf"))
    deadline = datetime.now(UTC) + timedelta(days=3, hours=2)

    def timer(request: Request) -> Response:  # a sync endpoint: Starlette runs it in its thread pool
        gif = naive_render(style, deadline, datetime.now(UTC))
        return Response(gif, media_type="image/gif", headers={"cache-control": "no-store"})

    return Starlette(routes=[Route("/v1/{token}/img/{name}", timer), Route("/readyz", ready)])


async def ready(request: Request) -> Response:
    return Response(b'{"status":"ready"}', media_type="application/json")


def serve(app: Starlette, port: int) -> None:
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=port,
        workers=1,
        loop="uvloop",
        http="httptools",
        access_log=False,
        log_level="warning",
        server_header=False,
    )


# --- (c) and (d): HTTP ------------------------------------------------------------------------------------


class Setup:
    """A key ring, a store of demo recipients, a config and path files, in a temporary folder.

    ``banners``: recipients 1 to ``recipients - 1`` (filled, then served from cache); ``burst``: the
    next ``burst`` recipients, never opened before the paced burst.
    """

    def __init__(self, folder: Path, recipients: int, burst: int, levels: int = 1) -> None:
        ring = new_keyring(datetime.now(UTC))
        save_keyring(ring, folder / "keys.json", overwrite=True)
        database_url = f"sqlite:///{folder / 'profiles.db'}"
        asyncio.run(_load_store(database_url, recipients + burst * levels))
        self.port = free_port()
        settings = load_settings(
            {},
            None,
            public_base_url=f"http://127.0.0.1:{self.port}",
            keys_file=str(folder / "keys.json"),
            allowed_senders=DEMO_SENDER,
            database_url=database_url,
            host="127.0.0.1",
            port=self.port,
            workers=1,
        ).settings
        self.config = write_toml(folder / "opentime.toml", settings)
        signer, now = TokenSigner(ring), int(time.time())
        self.banners = folder / "banners.txt"
        lines = [
            f"/v1/{signer.sign('demo', recipient_id(i), now=now)}/img/banner.png"
            for i in range(1, recipients)
        ]
        self.banners.write_text("\n".join(lines) + "\n")
        self.bursts = [
            [
                f"/v1/{signer.sign('demo', recipient_id(i), now=now)}/img/banner.png"
                for i in range(recipients + level * burst, recipients + (level + 1) * burst)
            ]
            for level in range(levels)
        ]
        self.timer = folder / "timer.txt"
        self.timer.write_text(f"/v1/{signer.sign_shared('demo', now=now)}/img/countdown.gif\n")
        self.count = len(lines)
        self.folder = folder


def first_body(url: str, path_file: Path) -> bytes:
    response = httpx.get(url + path_file.read_text().splitlines()[0], timeout=30)
    if response.status_code != 200 or "x-opentime-fallback" in response.headers:
        raise BenchError(
            f"{url}: status {response.status_code}, {response.headers.get('x-opentime-fallback')}"
        )
    return response.content


def load(
    url: str, paths: Path, args: argparse.Namespace, label: str, pid: int, connections: int
) -> WrkResult:
    result = run_wrk(
        url,
        paths,
        seconds=args.seconds,
        connections=connections,
        cpu=args.wrk_cpu,
        check=True,
        label=label,
        server_pid=pid,
    )
    require_clean(result)
    log(describe(result))
    return result


@dataclass
class Burst:
    """One burst of never-rendered banners, as the client saw it."""

    label: str
    sent: int
    personal: int  # answered with the recipient's image within the budget
    late: int  # the recipient's image, after the budget
    fallbacks: int  # X-Opentime-Fallback (budget-exceeded, render-queue-full, ...)
    p50_ms: float
    p99_ms: float
    rate: float  # requests a second offered (paced) or answered (closed loop)
    renders_per_s: float = 0.0  # closed loop: renders the server started a second
    shed: int = 0  # renders refused by the bound (opentime_image_renders_shed_total)

    @property
    def share(self) -> float:
        return self.personal / self.sent if self.sent else 0.0

    def describe(self) -> str:
        return (
            f"{self.label}: {self.sent} banners at {self.rate:,.0f}/s,"
            f" personal within budget {self.share:.1%} (late {self.late}, fallbacks {self.fallbacks},"
            f" shed {self.shed}), p50 {self.p50_ms:.1f} ms, p99 {self.p99_ms:.1f} ms"
        )


def scraped(url: str, name: str) -> float:
    text = httpx.get(f"{url}/metrics", timeout=10).text
    return sum(float(v) for v in re.findall(rf"^{name}(?:{{[^}}]*}})? (\S+)$", text, re.M))


def drained(url: str, within: float = 120.0) -> float:
    """Wait until no render is running, waiting or kept for later (the backlog has drained); the
    renders a second meanwhile (0 when nothing was waiting)."""
    started, renders = time.monotonic(), scraped(url, "opentime_image_renders_total")
    while time.monotonic() < started + within:
        waiting = scraped(url, "opentime_image_render_queue") + scraped(url, "opentime_image_render_backlog")
        if not waiting:
            elapsed = time.monotonic() - started
            done = scraped(url, "opentime_image_renders_total") - renders
            time.sleep(0.5)  # the last renders' bytes reach the cache
            return done / elapsed if done else 0.0
        time.sleep(0.05)
    raise BenchError(f"{url}: renders still waiting after {within:.0f} s")


def fill_burst(url: str, setup: Setup, args: argparse.Namespace) -> Burst:
    """wrk's fill phase at ``--burst-connections``: the render rate the pool sustains, and what a
    closed loop (every connection sends again the moment it is answered) gets at that depth."""
    renders, shed = scraped(url, "opentime_image_renders_total"), scraped(url, SHED)
    once = run_wrk(
        url,
        setup.banners,
        seconds=120,
        connections=args.burst_connections,
        cpu=args.wrk_cpu,
        limit=setup.count,
        label="fill (every banner rendered once)",
    )
    require_clean(once, allow_fallbacks=True)
    log(describe(once))
    started = scraped(url, "opentime_image_renders_total") - renders
    fallbacks = once.fallbacks or 0
    return Burst(
        f"closed loop, {args.burst_connections} connections (wrk)",
        once.requests,
        once.requests - fallbacks,
        0,
        fallbacks,
        once.p50_ms,
        once.p99_ms,
        once.rps,
        renders_per_s=started / once.duration_s,
        shed=int(scraped(url, SHED) - shed),
    )


async def _paced(url: str, paths: list[str], rate: float, connections: int, budget_ms: float) -> Burst:
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    headers = {"AMP-Email-Sender": DEMO_SENDER}
    answers: list[tuple[float, int, str | None]] = []
    slots = asyncio.Semaphore(connections)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=10, headers=headers) as client:

        async def one(path: str) -> None:
            try:
                started = time.perf_counter()
                response = await client.get(path)
                elapsed = (time.perf_counter() - started) * 1000
                answers.append((elapsed, response.status_code, response.headers.get("x-opentime-fallback")))
            finally:
                slots.release()

        loop = asyncio.get_running_loop()
        begin, sent = loop.time(), []
        for index, path in enumerate(paths):
            await asyncio.sleep(max(0.0, begin + index / rate - loop.time()))
            await slots.acquire()  # at most ``connections`` in flight, as a proxy's pool would be
            sent.append(asyncio.create_task(one(path)))
        await asyncio.gather(*sent)
    if any(status != 200 for _, status, _ in answers):
        raise BenchError(f"{url}: statuses {sorted({status for _, status, _ in answers})}")
    times = sorted(elapsed for elapsed, _, _ in answers)
    fallbacks = sum(reason is not None for _, _, reason in answers)
    personal = sum(reason is None and elapsed <= budget_ms for elapsed, _, reason in answers)
    late = len(answers) - fallbacks - personal
    p99 = times[min(len(times) - 1, int(len(times) * 0.99))]
    label = f"paced at {rate:,.0f}/s, at most {connections} in flight"
    return Burst(label, len(answers), personal, late, fallbacks, statistics.median(times), p99, rate)


def paced_burst(url: str, paths: list[str], rate: float, args: argparse.Namespace, label: str) -> Burst:
    """The paced client runs here, moved to wrk's core for the burst (the server has the other)."""
    shed = scraped(url, SHED) if label.startswith("opentime") else 0.0
    affinity = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {args.wrk_cpu})
    try:
        burst = asyncio.run(_paced(url, paths, rate, args.burst_connections, BUDGET_MS))
    finally:
        os.sched_setaffinity(0, affinity)
    burst.label = f"{label}, {burst.label}"
    if label.startswith("opentime"):
        burst.shed = int(scraped(url, SHED) - shed)
    log(burst.describe())
    return burst


def run_http(setup: Setup, args: argparse.Namespace) -> tuple[dict[str, WrkResult], int, dict[str, Burst]]:
    """Opentime (burst fill, banner from cache, shared timer, paced burst), then the bare route (same),
    then the naive timer server."""
    results, bursts = {}, {}
    opentime = start_server(
        "opentime",
        [sys.executable, "-m", "app", "serve", "--config", str(setup.config)],
        setup.port,
        setup.folder / "opentime.log",
        args.server_cpu,
    )
    try:
        url = opentime.base_url
        bursts["fill"] = fill_burst(url, setup, args)
        # Renders that missed their budget, or were refused, finish and fill the cache: the backlog
        # drains at the rate the pool sustains.
        bursts["fill"].renders_per_s = pool_rate = drained(url)
        log(bursts["fill"].describe() + f", then the backlog drained at {pool_rate:,.0f} renders/s")
        label = "check (every banner again: all cache hits)"
        once = run_wrk(
            url, setup.banners, seconds=120, connections=args.connections, cpu=args.wrk_cpu, limit=setup.count
        )
        require_clean(once)
        log(f"{label}: " + describe(once))
        banner = first_body(url, setup.banners)
        results["opentime banner"] = load(
            url, setup.banners, args, "opentime banner", opentime.pid, args.connections
        )
        first_body(url, setup.timer)
        results["opentime timer"] = load(
            url, setup.timer, args, "opentime timer", opentime.pid, args.timer_connections
        )
        for level, (share, paths) in enumerate(zip(args.burst_loads, setup.bursts, strict=True)):
            burst = paced_burst(url, paths, share * pool_rate, args, f"opentime at {share:.2f} of it")
            bursts[f"opentime {level}"] = burst
            drained(url)
    finally:
        stop_server(opentime)
    port = free_port()
    (setup.folder / "banner.png").write_bytes(banner)
    cmd = [sys.executable, "-m", "bench.images", "serve-baseline", "--port", str(port), "--body"]
    baseline = start_server(
        "baseline", [*cmd, str(setup.folder / "banner.png")], port, setup.folder / "b.log", args.server_cpu
    )
    try:
        results["baseline"] = load(
            baseline.base_url, setup.banners, args, "baseline", baseline.pid, args.connections
        )
        top = max(args.burst_loads) * pool_rate
        bursts["baseline"] = paced_burst(baseline.base_url, setup.bursts[-1], top, args, "baseline")
    finally:
        stop_server(baseline)
    port = free_port()
    cmd = [sys.executable, "-m", "bench.images", "serve-naive", "--port", str(port)]
    naive = start_server("naive", cmd, port, setup.folder / "naive.log", args.server_cpu)
    try:
        first_body(naive.base_url, setup.timer)
        results["naive timer"] = load(
            naive.base_url, setup.timer, args, "naive timer", naive.pid, args.timer_connections
        )
    except BenchError as exc:  # a GIF takes the naive server ~0.5 s: on a busy machine wrk times out
        log(f"(d) not measured: {exc}")
    finally:
        stop_server(naive)
    return results, len(banner), bursts


# --- report -----------------------------------------------------------------------------------------------


def report(
    renders: list[tuple[str, float, int]],
    http: dict[str, WrkResult],
    banner_bytes: int,
    bursts: dict[str, Burst],
) -> None:
    print(f"\n{'render (median of single-thread renders)':<52}{'ms':>9}{'bytes':>10}")
    for label, ms, size in renders:
        print(f"{label:<52}{ms:>9.1f}{size:>10,}")
    print(f"\n{'HTTP (wrk, server on one CPU)':<40}{'req/s':>10}{'p50 ms':>9}{'p99 ms':>9}")
    for name in ("baseline", "opentime banner", "naive timer", "opentime timer"):
        if name not in http:
            continue
        r = http[name]
        print(f"{name:<40}{r.rps:>10,.0f}{r.p50_ms:>9.2f}{r.p99_ms:>9.2f}")
    cache = http["opentime banner"].rps / http["baseline"].rps
    naive = http.get("naive timer")
    timer = http["opentime timer"].rps / naive.rps if naive is not None else float("nan")
    print(f"\n(c) cached banner ({banner_bytes:,} bytes) vs bare Starlette: {cache:.2f} (target >= 0.7)")
    print(f"(d) shared countdown vs naive per-request renderer: {timer:,.0f}x (target >= 20x)")
    fill, paced = bursts["fill"], bursts["opentime 0"]
    print(
        "\n(e) burst of never-rendered banners, server and render processes on one CPU"
        f" (budget {BUDGET_MS:.0f} ms; targets: >= 95% personal, p99 <= {BUDGET_MS + 20:.0f} ms)"
    )
    print(f"    the pool sustained {fill.renders_per_s:,.0f} renders/s (its backlog draining)")
    for burst in bursts.values():
        print(f"    {burst.describe()}")
    print(
        f"ratio_cache={cache:.2f} ratio_timer={timer:.0f} burst_personal={paced.share:.3f}"
        f" burst_p99_ms={paced.p99_ms:.0f}"
    )


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command")
    base = sub.add_parser("serve-baseline", help="(internal) the bare Starlette image route")
    base.add_argument("--port", type=int, required=True)
    base.add_argument("--body", type=Path, required=True)
    naive = sub.add_parser("serve-naive", help="(internal) the naive per-request countdown server")
    naive.add_argument("--port", type=int, required=True)
    parser.add_argument("--seconds", type=int, default=10, help="each measured wrk run")
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--timer-connections", type=int, default=8, help="(d): the naive server is slow")
    parser.add_argument("--recipients", type=int, default=400, help="distinct banners in (c)")
    parser.add_argument(
        "--burst", type=int, default=600, help="never-rendered banners per paced burst in (e)"
    )
    parser.add_argument("--burst-connections", type=int, default=64, help="(e): requests in flight")
    parser.add_argument(
        "--burst-loads",
        type=lambda text: [float(x) for x in text.split(",")],
        default=[0.5, 0.65, 0.8],
        help="(e): paces of the bursts, as shares of the render rate the pool sustained (comma list)",
    )
    parser.add_argument("--renders", type=int, default=21)
    parser.add_argument("--naive-renders", type=int, default=5)
    parser.add_argument("--server-cpu", type=int, default=0)
    parser.add_argument("--wrk-cpu", type=int, default=1)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if args.command == "serve-baseline":
        serve(baseline_app(args.body.read_bytes(), "image/png"), args.port)
        return 0
    if args.command == "serve-naive":
        serve(naive_app(), args.port)
        return 0
    preflight(args)
    renders = banner_rows(args.renders) + countdown_rows(args.renders, args.naive_renders)
    for label, ms, size in renders:
        log(f"{label}: {ms:.1f} ms, {size:,} bytes")
    try:
        with tempfile.TemporaryDirectory(prefix="opentime-bench-img-") as tmp:
            http, banner_bytes, bursts = run_http(
                Setup(Path(tmp), args.recipients, args.burst, len(args.burst_loads)), args
            )
    except BenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        PROCS.stop_all()
    report(renders, http, banner_bytes, bursts)
    return 0


if __name__ == "__main__":
    sys.exit(main())
