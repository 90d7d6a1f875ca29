"""Soak: the open-time mix at a share (70 %) of its measured peak for 10 minutes, with events arriving.

    apt-get install -y wrk && python3 -m pip install matplotlib    # once
    python3 -m bench.soak                          # 10 minutes at 70 % of the peak (~13 min in all)
    python3 -m bench.soak --minutes 2              # a shorter look

One run, loopback only, the server pinned to CPU 0 and wrk to CPU 1:

1. Prepares a folder: key ring, a SQLite store of ``--recipients`` demo recipients, a config with a
   webhook secret, and one file of the open-time mix in a shuffled order: for every recipient the
   AMP part's two amp-lists (``hello.json``, ``picks.json``), the banner image, the ``picks``
   fragment, the campaign-wide countdown GIF, and for one recipient in ten the web view.
2. Baseline: the bare Starlette route of ``bench/baseline_app.py`` on the amp-list paths, for scale.
3. Starts ``opentime serve``, requests every path once (the first opens: renders, store reads), again
   until under 1 % fall back (up to 4 passes), then measures the unpaced peak of the mix
   (``--peak-seconds``).
4. Soak: ``--minutes`` of paced load at ``--share`` of that peak, in slices of ``--slice-seconds``
   (each slice is one wrk run, so every slice has its own rate, p50/p99, errors and fallbacks), while
   a poster sends ``--events`` signed ``profile.updated`` events per second for random recipients of
   the mix (each one invalidates what that recipient has cached: the next opens read and render
   again), and the server's RSS (with its children) is sampled every second.
   wrk paces by making each connection wait before each request; the wait is re-tuned after every
   slice so the achieved rate tracks the target.

Verdict (exit 1 when it fails): zero errors (socket errors, non-2xx, events not acknowledged), RSS
flat (median of the last fifth within ``--rss-growth`` of the median of the second fifth: the first
fifth is the cache settling), p99 stable (no slice's p99 above twice the median slice's p99).
Writes ``bench/results/soak.png`` (rate, p50/p99 and RSS against time) and ``bench/results/soak.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import orjson

from app.cli.serve import write_toml
from app.config import load_settings
from app.demo import DEMO_SENDER, recipient_id
from app.security.keyring import new_keyring, save_keyring
from app.security.tokens import TokenSigner
from app.security.webhook_auth import sign_header
from bench.amp_list import (
    BASELINE_APP,
    PROCS,
    BenchError,
    WrkResult,
    _load_store,
    describe,
    free_port,
    log,
    rss,
    run_wrk,
    start_server,
)

BENCH_DIR = Path(__file__).resolve().parent
RESULTS_JSON = BENCH_DIR / "results" / "soak.json"
RESULTS_PNG = BENCH_DIR / "results" / "soak.png"
SECRET = "soak-webhook-secret-0123456789abcdef"  # noqa: S105 (a throwaway server's)
CONNECTIONS = 100
WARM_PASSES = 4
VIEW_EVERY = 10  # one recipient in ten also opens the web view (the heaviest answer)


@dataclass
class Slice:
    started_s: float  # seconds since the soak began
    target_rps: float
    delay_ms: int
    result: WrkResult


@dataclass
class Soak:
    slices: list[Slice] = field(default_factory=list)
    rss: list[tuple[float, float]] = field(default_factory=list)  # (seconds since start, MB)
    events_sent: int = 0
    events_failed: list[str] = field(default_factory=list)


# --- preparation ------------------------------------------------------------------------------------


def mix_paths(signer: TokenSigner, recipients: int, now: int, seed: int) -> list[str]:
    """The open-time mix: what opening the demo email fetches, for every recipient, shuffled."""
    shared = signer.sign_shared("demo", now=now)
    paths = []
    for index in range(1, recipients + 1):
        token = signer.sign("demo", recipient_id(index), now=now)
        paths += [
            f"/v1/{token}/list/hello.json",
            f"/v1/{token}/list/picks.json",
            f"/v1/{token}/img/banner.png",
            f"/v1/{token}/html/picks",
            f"/v1/{shared}/img/countdown.gif",
        ]
        if index % VIEW_EVERY == 0:
            paths.append(f"/v1/{token}/view")
    random.Random(seed).shuffle(paths)
    return paths


def prepare(folder: Path, args: argparse.Namespace) -> tuple[Path, int, Path, Path]:
    """Key ring, store, config and the two path files (mix, amp-lists only); returns config and port."""
    ring = new_keyring(datetime.now(UTC))
    save_keyring(ring, folder / "keys.json", overwrite=True)
    database_url = f"sqlite:///{folder / 'profiles.db'}"
    asyncio.run(_load_store(database_url, args.recipients))
    port = free_port()
    settings = load_settings(
        {},
        None,
        public_base_url=f"http://127.0.0.1:{port}",
        keys_file=str(folder / "keys.json"),
        allowed_senders=DEMO_SENDER,
        database_url=database_url,
        webhook_secrets=SECRET,
        host="127.0.0.1",
        port=port,
        workers=1,
    ).settings
    config = write_toml(folder / "opentime.toml", settings)
    paths = mix_paths(TokenSigner(ring), args.recipients, int(time.time()), args.seed)
    mix = folder / "mix.txt"
    mix.write_text("\n".join(paths) + "\n")
    lists = folder / "lists.txt"
    lists.write_text("\n".join(p for p in paths if "/list/" in p) + "\n")
    return config, port, mix, lists


# --- load -------------------------------------------------------------------------------------------


class EventPoster(threading.Thread):
    """Signed ``profile.updated`` events at a steady rate for random recipients of the mix; every
    answer but 200 is remembered (an acknowledged event is the only kind that counts as sent)."""

    def __init__(self, url: str, per_second: float, recipients: int, soak: Soak) -> None:
        super().__init__(daemon=True)
        self.url, self.per_second, self.recipients, self.soak = url, per_second, recipients, soak
        self.stopping = threading.Event()

    def run(self) -> None:
        if self.per_second <= 0:
            return
        rng, period, n = random.Random(7), 1.0 / self.per_second, 0
        next_at = time.monotonic()
        with httpx.Client(timeout=10) as client:
            while not self.stopping.is_set():
                n += 1
                self._post(client, n, rng.randint(1, self.recipients))
                next_at += period
                self.stopping.wait(max(0.0, next_at - time.monotonic()))

    def _post(self, client: httpx.Client, n: int, index: int) -> None:
        event = {
            "id": f"soak-{n}",
            "type": "profile.updated",
            "recipient": recipient_id(index),
            "occurred_at": datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "payload": {"loyalty": {"points": 1000 + n}},
        }
        body = orjson.dumps(event)
        headers = {
            "content-type": "application/json",
            "opentime-signature": sign_header([SECRET], int(time.time()), body),
        }
        try:
            status = client.post(self.url, content=body, headers=headers).status_code
        except httpx.TransportError as exc:
            self.soak.events_failed.append(f"{event['id']}: {exc!r}")
            return
        if status == 200:
            self.soak.events_sent += 1
        else:
            self.soak.events_failed.append(f"{event['id']}: HTTP {status}")


class RssSampler(threading.Thread):
    def __init__(self, pid: int, database: Path, soak: Soak, started: float) -> None:
        super().__init__(daemon=True)
        self.pid, self.database, self.soak, self.started = pid, database, soak, started
        self.stopping = threading.Event()

    def run(self) -> None:
        while not self.stopping.wait(1.0):
            self.soak.rss.append((time.monotonic() - self.started, rss(self.pid, self.database).total))


def next_delay(delay_ms: int, target: float, achieved: float) -> int:
    """The per-connection wait that moves ``achieved`` towards ``target`` requests/s."""
    if achieved <= 0:
        return delay_ms
    correction = CONNECTIONS * 1000 * (1 / target - 1 / achieved)
    return max(0, round(delay_ms + correction / 2))  # half a step: a busy slice must not make the next burst


def soak(url: str, pid: int, mix: Path, target: float, args: argparse.Namespace, database: Path) -> Soak:
    result = Soak()
    started = time.monotonic()
    poster = EventPoster(f"{url}/webhooks/events", args.events, args.recipients, result)
    sampler = RssSampler(pid, database, result, started)
    poster.start()
    sampler.start()
    delay_ms = round(CONNECTIONS * 1000 / target)
    try:
        while time.monotonic() - started < args.minutes * 60 - 1:
            at = time.monotonic() - started
            one = run_wrk(
                url, mix, seconds=args.slice_seconds, connections=CONNECTIONS, cpu=args.wrk_cpu,
                check=True, label=f"soak {at:.0f}s", server_pid=pid, delay_ms=delay_ms,
            )  # fmt: skip
            result.slices.append(Slice(at, target, delay_ms, one))
            log(f"  {at:5.0f} s  {describe(one)}  RSS {result.rss[-1][1] if result.rss else 0:.1f} MB")
            delay_ms = next_delay(delay_ms, target, one.rps)
    finally:
        poster.stopping.set()
        sampler.stopping.set()
        poster.join(timeout=15)
        sampler.join(timeout=5)
    return result


# --- verdict and report -----------------------------------------------------------------------------


@dataclass
class Verdict:
    errors: int
    non2xx: int
    events_failed: int
    rss_early_mb: float
    rss_late_mb: float
    rss_growth: float
    p99_median_ms: float
    p99_max_ms: float
    passed: bool
    reasons: list[str]


def judge(result: Soak, args: argparse.Namespace) -> Verdict:
    if not result.slices or len(result.rss) < 10:
        raise BenchError("the soak ended before it measured anything")
    errors = sum(s.result.errors for s in result.slices)
    non2xx = sum(s.result.non2xx for s in result.slices)
    fifth = len(result.rss) // 5
    early = statistics.median(mb for _, mb in result.rss[fifth : 2 * fifth])
    late = statistics.median(mb for _, mb in result.rss[-fifth:])
    growth = late / early - 1
    p99s = [s.result.p99_ms for s in result.slices]
    p99_median, p99_max = statistics.median(p99s), max(p99s)
    reasons = []
    if errors or non2xx or result.events_failed:
        reasons.append(f"errors: {errors} socket, {non2xx} non-2xx, {len(result.events_failed)} events")
    if growth > args.rss_growth:
        reasons.append(f"RSS grew {growth:.1%} (limit {args.rss_growth:.0%})")
    if p99_max > 2 * p99_median:
        reasons.append(f"p99 not stable: a slice at {p99_max:.1f} ms, median slice {p99_median:.1f} ms")
    return Verdict(
        errors, non2xx, len(result.events_failed), early, late, growth, p99_median, p99_max,
        not reasons, reasons,
    )  # fmt: skip


def plot(result: Soak, target: float, peak: float, out: Path) -> None:
    import matplotlib  # a bench-only dependency, checked by main() before anything runs

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (rate, latency, memory) = plt.subplots(3, 1, figsize=(10, 9), sharex=True)
    mids = [(s.started_s + s.result.duration_s / 2) / 60 for s in result.slices]
    rate.plot(mids, [s.result.rps for s in result.slices], marker="o", label="achieved")
    rate.axhline(target, color="tab:green", linestyle="--", label=f"target ({target:,.0f}/s)")
    rate.axhline(peak, color="tab:red", linestyle=":", label=f"peak ({peak:,.0f}/s)")
    rate.set_ylabel("requests/s")
    rate.set_ylim(bottom=0)
    rate.legend(loc="lower right")
    latency.plot(mids, [s.result.p50_ms for s in result.slices], marker="o", label="p50")
    latency.plot(mids, [s.result.p99_ms for s in result.slices], marker="o", label="p99")
    latency.set_ylabel("latency (ms)")
    latency.set_ylim(bottom=0)
    latency.legend(loc="upper right")
    memory.plot([t / 60 for t, _ in result.rss], [mb for _, mb in result.rss], label="server RSS")
    memory.set_ylabel("RSS (MB)")
    memory.set_xlabel("minutes into the soak")
    memory.set_ylim(bottom=0)
    memory.legend(loc="lower right")
    figure.suptitle("Opentime soak: open-time mix with events arriving")
    figure.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out, dpi=100)
    plt.close(figure)


def report(result: Soak, verdict: Verdict, figures: dict[str, Any]) -> None:
    fallbacks = sum(s.result.fallbacks or 0 for s in result.slices)
    requests = sum(s.result.requests for s in result.slices)
    print()
    print(f"baseline (bare Starlette, amp-list paths): {figures['baseline_rps']:,.0f} req/s")
    print(f"peak of the mix: {figures['peak_rps']:,.0f} req/s, p50 {figures['peak_p50_ms']:.2f} ms,"
          f" p99 {figures['peak_p99_ms']:.2f} ms")  # fmt: skip
    print(f"soak: {len(result.slices)} slices, {requests:,} requests, target {figures['target_rps']:,.0f}/s,"
          f" achieved median {statistics.median(s.result.rps for s in result.slices):,.0f}/s")  # fmt: skip
    print(f"  p99 per slice: median {verdict.p99_median_ms:.2f} ms, max {verdict.p99_max_ms:.2f} ms")
    print(f"  RSS: {verdict.rss_early_mb:.1f} MB (2nd fifth) -> {verdict.rss_late_mb:.1f} MB (last fifth),"
          f" {verdict.rss_growth:+.1%}")  # fmt: skip
    share = fallbacks / max(requests, 1)
    print(f"  errors: {verdict.errors} socket, {verdict.non2xx} non-2xx; events: {result.events_sent:,}"
          f" acknowledged, {verdict.events_failed} failed")  # fmt: skip
    print(f"  fallbacks: {fallbacks:,} ({share:.2%} of the answers)")
    print(f"  plot: {RESULTS_PNG}")
    print("PASS" if verdict.passed else "FAIL: " + "; ".join(verdict.reasons))


# --- main -------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--share", type=float, default=0.7, help="share of the measured peak (0.7)")
    parser.add_argument("--recipients", type=int, default=20_000)
    parser.add_argument("--events", type=float, default=20.0, help="profile.updated events per second")
    parser.add_argument("--slice-seconds", type=int, default=30)
    parser.add_argument("--peak-seconds", type=int, default=20)
    parser.add_argument("--rss-growth", type=float, default=0.05, help="allowed RSS growth (0.05 = 5%%)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--server-cpu", type=int, default=0)
    parser.add_argument("--wrk-cpu", type=int, default=1)
    return parser.parse_args(argv)


def measure_baseline(folder: Path, lists: Path, args: argparse.Namespace) -> WrkResult:
    port = free_port()
    command = [sys.executable, str(BASELINE_APP), "--port", str(port)]
    server = start_server("baseline", command, port, folder / "baseline.log", args.server_cpu)
    try:
        url = server.base_url
        run_wrk(url, lists, seconds=3, connections=CONNECTIONS, cpu=args.wrk_cpu, label="baseline warm-up")
        return run_wrk(
            url, lists, seconds=args.peak_seconds, connections=CONNECTIONS, cpu=args.wrk_cpu,
            label="baseline", server_pid=server.pid,
        )  # fmt: skip
    finally:
        PROCS.stop(server.process)


def first_opens(url: str, pid: int, mix: Path, count: int, args: argparse.Namespace) -> WrkResult:
    """Every path once, again until under 1 % of them fall back (a first open that got its fallback
    is rendered again on the next): the peak and the soak then measure a served mix, not a cold one."""
    passes = []
    for number in range(1, WARM_PASSES + 1):
        log(f"first opens, pass {number}: each of the {count:,} paths once")
        one = run_wrk(url, mix, seconds=600, connections=CONNECTIONS, cpu=args.wrk_cpu, check=True,
                      limit=count, label=f"pass {number}", server_pid=pid)  # fmt: skip
        log(describe(one))
        passes.append(one)
        if (one.fallbacks or 0) <= count / 100:
            break
    return passes[0]


def run(folder: Path, args: argparse.Namespace) -> int:
    log(f"preparing {args.recipients:,} recipients in {folder}")
    config, port, mix, lists = prepare(folder, args)
    count = len(mix.read_text().splitlines())
    baseline = measure_baseline(folder, lists, args)
    log(describe(baseline))
    command = [sys.executable, "-m", "app", "serve", "--config", str(config)]
    server = start_server("opentime", command, port, folder / "opentime.log", args.server_cpu)
    try:
        url = server.base_url
        first = first_opens(url, server.pid, mix, count, args)
        peak = run_wrk(url, mix, seconds=args.peak_seconds, connections=CONNECTIONS, cpu=args.wrk_cpu,
                       check=True, label="peak", server_pid=server.pid)  # fmt: skip
        log(describe(peak))
        target = peak.rps * args.share
        log(f"soak: {args.minutes:g} min at {target:,.0f} req/s ({args.share:.0%} of the peak),"
            f" {args.events:g} events/s")  # fmt: skip
        result = soak(url, server.pid, mix, target, args, folder / "profiles.db")
    finally:
        PROCS.stop(server.process)
    verdict = judge(result, args)
    figures = {
        "baseline_rps": baseline.rps, "peak_rps": peak.rps, "peak_p50_ms": peak.p50_ms,
        "peak_p99_ms": peak.p99_ms, "target_rps": target, "first_opens": asdict(first),
    }  # fmt: skip
    plot(result, target, peak.rps, RESULTS_PNG)
    RESULTS_JSON.write_bytes(
        orjson.dumps({"figures": figures, "verdict": asdict(verdict), "soak": asdict(result)}, default=str)
    )
    report(result, verdict, figures)
    return 0 if verdict.passed else 1


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        print("bench.soak draws its plot with matplotlib: python3 -m pip install matplotlib", file=sys.stderr)
        return 2
    try:
        with tempfile.TemporaryDirectory(prefix="opentime-soak-") as tmp:
            return run(Path(tmp), args)
    except BenchError as exc:
        print(f"bench.soak: {exc}", file=sys.stderr)
        return 1
    finally:
        PROCS.stop_all()


if __name__ == "__main__":
    sys.exit(main())
