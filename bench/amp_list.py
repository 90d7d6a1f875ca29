"""Benchmark ``GET /v1/{token}/list/{block}.json`` against a bare Starlette baseline, in one run.

    python3 bench/amp_list.py                          # 100,000 recipients in the store
    python3 bench/amp_list.py --rss-recipients 1000000 # the full run: A, B and C on a 1M-row store
    python3 bench/amp_list.py --quick                  # smoke check (short runs, small store)

What it does (loopback only, each server pinned to CPU 0, wrk pinned to CPU 1, one server at a time):

1. Prepares a folder: a key ring, a SQLite store of N synthetic recipients (``app.demo``), a TOML
   config, and files of request paths for many distinct recipients (tokens minted with the ring).
2. Baseline: ``bench/baseline_app.py`` (Starlette route, constant pre-encoded 2 KB JSON, uvicorn with
   opentime's settings), warmed up and then loaded with the same request paths.
3. (A) warm: ``python3 -m app serve --config <toml>``; one pass over every warm path fills the cache,
   a second pass must be 100% cache hits (no ``X-Opentime-Fallback``), then the measured run.
   (C) RSS of the server process (and any children) after the warm run.
4. (B) cold: the server is restarted (empty cache) and every measured request is for a different
   recipient that was never requested before (profile read from SQLite): wrk stops once each of
   the cold set's paths has been answered once, and the rate is timed from the first request to
   the last response. With ``--rounds N`` this runs N times (fresh server, a different cold set
   each time); the median is compared with the median of the N baseline runs.

Prints a table, then ``ratio=<warm ratio>`` as the last line; writes ``bench/results/amp_list.json``.
Needs ``wrk`` (``apt-get install -y wrk``), ``taskset`` and two CPUs; ``--profile N`` also needs py-spy.

Two revisions in one run (the figures drift by several percent between runs, so a before/after
comparison is only fair within one run):

    python3 bench/amp_list.py --rounds 3 --compare-with ../wt-before
    python3 bench/amp_list.py --rounds 3 --source ../main --compare-with ../wt-before

``--source DIR`` is the checkout whose server is measured (default: the one this script is in), reported
as "after"; ``--compare-with DIR`` is another checkout of this project, reported as "before". Each
opentime server runs with ``cwd`` and ``PYTHONPATH`` set to its checkout, so ``python3 -m app`` imports
that checkout's ``app``; the bench itself prepares the store, key ring, config and paths with its own
``app`` and both servers use the same files. Every round runs the baseline, then both checkouts' warm
and cold phases (before first in odd rounds, after first in even rounds, so slow drift hits both
alike); within a round both cold runs use the same never-seen set (each on a fresh server, so it is
never-seen for both). Each warm and cold figure is divided by the baseline of its own round; the medians
are taken over the quiet rounds (no run of the round with other processes above 10% of the server CPU).
The report adds a per-round table, both checkouts' rows and RSS, the commit of each checkout (and
whether its working tree had uncommitted changes, at the start and at the end of the run), and a line
``before: warm W cold C | after: warm W cold C`` before ``ratio=`` (the after side's warm ratio).
``--profile`` profiles only the after side.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import hashlib
import itertools
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any

import httpx

from app.cli.serve import write_toml
from app.config import load_settings
from app.demo import DEMO_SENDER, demo_rows, recipient_id
from app.security.keyring import new_keyring, save_keyring
from app.security.tokens import TokenSigner
from app.store import open_store

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
LUA = BENCH_DIR / "wrk_paths.lua"
BASELINE_APP = BENCH_DIR / "baseline_app.py"
RESULTS = BENCH_DIR / "results" / "amp_list.json"
PROFILE_RAW = BENCH_DIR / "results" / "amp_list_profile_{phase}.txt"

CAMPAIGN = "demo"
BLOCK = "picks"
FALLBACK_HEADER = "x-opentime-fallback"
JSON_MARKER = "opentime-bench-json "
EXHAUSTED_MARKER = "opentime-bench: exhausted"
LOAD_BATCH = 20_000
SAMPLE_SIZE = 20
MAX_DURATION = 240  # the demo block caches for 300 s: a longer warm run would start missing
QUIET_SHARE = 0.10
NOISY_SHARE = 0.10
PROFILE_RATE = 200
WARM_TARGET, COLD_TARGET, RSS_TARGET_MB = 0.75, 0.5, 150.0


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


class BenchError(Exception):
    """A check failed: the figures would be meaningless."""


# --- processes ------------------------------------------------------------------------------------


class Processes:
    """Every child this run starts, so any exit path (error, Ctrl-C, SIGTERM) stops them all."""

    def __init__(self) -> None:
        self._live: list[subprocess.Popen[Any]] = []

    def start(self, args: Sequence[str], **kwargs: Any) -> subprocess.Popen[Any]:
        # A new session: the terminal's Ctrl-C reaches only this script, which then stops its children.
        process = subprocess.Popen(args, start_new_session=True, **kwargs)
        self._live.append(process)
        return process

    def stop(self, process: subprocess.Popen[Any], sig: int = signal.SIGTERM) -> None:
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, sig)
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        if process in self._live:
            self._live.remove(process)

    def stop_all(self) -> None:
        for process in list(self._live):
            self.stop(process)


PROCS = Processes()


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


@dataclass
class Rss:
    """Resident memory of the server process and its descendants, in MB."""

    total: float  # VmRSS: what `ps`/`top` show
    anon: float  # RssAnon: private heap (Python objects, the response cache)
    file: float  # RssFile: mapped files (shared libraries and SQLite's mmap of the database)
    db_mapped: float  # the part of RssFile that is the SQLite database file
    processes: int

    def __str__(self) -> str:
        return (
            f"{self.total:.1f} MB (anon {self.anon:.1f} MB, file-backed {self.file:.1f} MB of which"
            f" SQLite mmap {self.db_mapped:.1f} MB; {self.processes} process(es))"
        )


def rss(pid: int, database: Path) -> Rss:
    """VmRSS/RssAnon/RssFile of ``pid`` plus its descendants (uvicorn forks with --workers > 1)."""
    kb = {"VmRSS:": 0, "RssAnon:": 0, "RssFile:": 0}
    db_kb, pids = 0, [pid, *descendants(pid)]
    for one in pids:
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{one}/status").read_text().splitlines():
                parts = line.split()
                if parts and parts[0] in kb:
                    kb[parts[0]] += int(parts[1])
        with contextlib.suppress(OSError):
            mapping = ""
            for line in Path(f"/proc/{one}/smaps").read_text().splitlines():
                first = line.split(maxsplit=5)
                if "-" in first[0] and len(first) >= 5:
                    mapping = first[5] if len(first) == 6 else ""
                elif first[0] == "Rss:" and mapping.startswith(str(database)):
                    db_kb += int(first[1])
    return Rss(kb["VmRSS:"] / 1024, kb["RssAnon:"] / 1024, kb["RssFile:"] / 1024, db_kb / 1024, len(pids))


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of ``pid`` (all its threads) and its descendants."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for one in [pid, *descendants(pid)]:
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{one}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / ticks
    return total


def core_times(cpus: Sequence[int]) -> dict[int, tuple[int, int, int]]:
    """Per-CPU (busy, steal, total) jiffies from /proc/stat."""
    wanted = {f"cpu{cpu}": cpu for cpu in cpus}
    times: dict[int, tuple[int, int, int]] = {}
    for line in Path("/proc/stat").read_text().splitlines():
        name, *values = line.split()
        if name in wanted:
            numbers = [int(v) for v in values[:8]]
            total = sum(numbers)
            idle = numbers[3] + numbers[4]
            times[wanted[name]] = (total - idle - numbers[7], numbers[7], total)
    return times


def core_usage(
    before: dict[int, tuple[int, int, int]], after: dict[int, tuple[int, int, int]]
) -> dict[int, tuple[float, float]]:
    """Per-CPU (busy share, steal share) between two ``core_times`` readings."""
    usage = {}
    for cpu, (busy, steal, total) in after.items():
        b0, s0, t0 = before[cpu]
        span = max(1, total - t0)
        usage[cpu] = ((busy - b0) / span, (steal - s0) / span)
    return usage


def process_times() -> dict[int, tuple[float, str]]:
    """CPU seconds and command line of every process."""
    ticks = os.sysconf("SC_CLK_TCK")
    times = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                times[int(entry.name)] = ((int(fields[11]) + int(fields[12])) / ticks, cmd.strip()[:80])
    return times


def busiest(before: dict[int, tuple[float, str]], seconds: float, limit: int = 3) -> str:
    """The processes that used the most CPU since ``before`` (for the "machine is busy" message)."""
    after = process_times()
    deltas = [
        ((spent - before[pid][0]) / seconds, pid, cmd)
        for pid, (spent, cmd) in after.items()
        if pid in before and pid != os.getpid()
    ]
    deltas.sort(reverse=True)
    return "; ".join(f"{share:.0%} pid {pid} {cmd}" for share, pid, cmd in deltas[:limit] if share > 0.02)


def wait_quiet(args: argparse.Namespace, results: Results, label: str) -> None:
    """Before a measured run, wait (up to --wait-idle s) until both CPUs are idle."""
    cpus = (args.server_cpu, args.wrk_cpu)
    deadline = time.monotonic() + args.wait_idle
    while True:
        before, procs = core_times(cpus), process_times()
        time.sleep(1)
        usage = core_usage(before, core_times(cpus))
        others = busiest(procs, 1.0)
        busy = max(usage[cpu][0] + usage[cpu][1] for cpu in cpus)
        if busy <= QUIET_SHARE:
            return
        if time.monotonic() >= deadline:
            note = (
                f"WARNING: {label}: CPUs not idle before the run ({busy:.0%} busy or stolen);"
                f" busiest: {others}"
            )
            results.notes.append(note)
            log(note)
            return
        log(f"waiting for idle CPUs before {label} ({busy:.0%} busy): {others}")
        time.sleep(4)


# --- preparation ----------------------------------------------------------------------------------


@dataclass
class Prepared:
    folder: Path
    config: Path
    port: int
    store_rows: int
    paths: dict[str, Path]
    counts: dict[str, int]
    database: Path
    body_bytes: int = 0


async def _load_store(database_url: str, rows: int) -> int:
    store = open_store(database_url)
    await store.open()
    try:
        existing = await store.profiles.count()
        if existing == rows:
            log(f"reusing the store: {existing:,} recipients already loaded")
            return 0
        if existing:
            raise BenchError(
                f"store has {existing:,} rows, expected {rows:,}: delete it or use another --workdir"
            )
        started = time.monotonic()
        source = demo_rows(rows)
        loaded = 0
        while batch := list(itertools.islice(source, LOAD_BATCH)):
            await store.profiles.upsert_many(batch)
            loaded += len(batch)
            if loaded % 100_000 == 0 or loaded == rows:
                rate = loaded / (time.monotonic() - started)
                log(f"  loaded {loaded:,}/{rows:,} recipients ({rate:,.0f}/s)")
        return loaded
    finally:
        await store.close()


def _write_paths(path: Path, signer: TokenSigner, indexes: Sequence[int], now: int) -> None:
    with path.open("w", encoding="ascii") as out:
        for index in indexes:
            token = signer.sign(CAMPAIGN, recipient_id(index), now=now)
            out.write(f"/v1/{token}/list/{BLOCK}.json\n")


def plan_sets(store_rows: int, args: argparse.Namespace) -> dict[str, int]:
    """How many distinct recipients each phase uses; the sets never overlap."""
    warm = min(args.warm_recipients, store_rows // 2)
    rest = store_rows - warm
    sample = min(SAMPLE_SIZE, rest // 10)
    cold_warmup = min(args.cold_warmup, rest // 10)
    extra = args.connections + 10  # in flight when the cold set is exhausted: distinct cold ids too
    rounds = args.rounds  # one never-seen cold set per round
    cold = min(args.cold_recipients, (rest - sample - cold_warmup) // rounds - extra)
    if warm < 100 or cold < 1000:
        raise BenchError(f"store of {store_rows:,} recipients is too small for this benchmark")
    profile = 0
    if args.profile:
        profile = max(0, min(400_000, rest - sample - cold_warmup - rounds * (cold + extra)))
    return {
        "warm": warm,
        "cold_sample": sample,
        "cold_warmup": cold_warmup,
        "cold": cold,
        "cold_extra": extra,
        "cold_rounds": rounds,
        "cold_profile": profile,
    }


def cold_set_name(index: int) -> str:
    return "cold" if index == 0 else f"cold_{index + 1}"


def prepare(folder: Path, store_rows: int, args: argparse.Namespace) -> Prepared:
    folder.mkdir(parents=True, exist_ok=True)
    now = datetime.now(UTC)
    ring = new_keyring(now)
    keys_file = folder / "keys.json"
    save_keyring(ring, keys_file, overwrite=True)

    db = folder / f"profiles-{store_rows}.db"
    database_url = f"sqlite:///{db}"  # db is absolute: sqlite:////abs/path.db
    log(f"store {db} ({store_rows:,} recipients)")
    asyncio.run(_load_store(database_url, store_rows))

    port = free_port()
    settings = load_settings(
        {},
        None,
        public_base_url=f"http://127.0.0.1:{port}",
        keys_file=str(keys_file),
        allowed_senders=DEMO_SENDER,
        database_url=database_url,
        host="127.0.0.1",
        port=port,
        workers=1,
    ).settings
    config = write_toml(folder / "opentime.toml", settings)

    counts = plan_sets(store_rows, args)
    rng = random.Random(args.seed)
    rounds = counts["cold_rounds"]
    cold_sets = [(cold_set_name(i), counts["cold"] + counts["cold_extra"]) for i in range(rounds)]
    total = sum(n for name, n in counts.items() if name not in ("cold", "cold_extra", "cold_rounds"))
    picked = rng.sample(range(1, store_rows + 1), total + sum(n for _, n in cold_sets))
    signer = TokenSigner(ring)
    stamp = int(now.timestamp())
    paths: dict[str, Path] = {}
    offset = 0
    log(f"minting {len(picked):,} tokens")
    for name, size in (
        ("warm", counts["warm"]),
        ("cold_sample", counts["cold_sample"]),
        ("cold_warmup", counts["cold_warmup"]),
        *cold_sets,
        ("cold_profile", counts["cold_profile"]),
    ):
        paths[name] = folder / f"paths-{name}.txt"
        _write_paths(paths[name], signer, picked[offset : offset + size], stamp)
        offset += size
    return Prepared(folder, config, port, store_rows, paths, counts, db)


# --- wrk ------------------------------------------------------------------------------------------


@dataclass
class WrkResult:
    label: str
    rps: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    p999_ms: float
    requests: int
    duration_s: float
    errors: int
    non2xx: int
    fallbacks: int | None
    wrapped: int
    server_cpu: float | None = None  # CPU time of the server process / wall time
    wrk_cpu: float | None = None  # same for wrk (near 100%: wrk is the bottleneck)
    core_busy: float | None = None  # whole server CPU busy share (server + anything else there)
    core_steal: float | None = None  # share stolen by the hypervisor on the server CPU
    raw: dict[str, Any] = field(default_factory=dict)


def run_wrk(
    url: str,
    paths: Path,
    *,
    seconds: int,
    connections: int,
    cpu: int,
    check: bool = False,
    limit: int = 0,
    label: str = "",
    server_pid: int | None = None,
    delay_ms: int = 0,
) -> WrkResult:
    """One wrk run; with ``limit``, it ends as soon as ``limit`` responses have arrived; with
    ``delay_ms``, each connection waits that long before each request (a paced load)."""
    env = {**os.environ, "WRK_PATHS": str(paths), "WRK_SENDER": DEMO_SENDER}
    env["WRK_CHECK"] = "1" if check else "0"
    env["WRK_LIMIT"] = str(limit)
    env["WRK_DELAY_MS"] = str(delay_ms)
    args = ["taskset", "-c", str(cpu), "wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency"]
    args += ["--timeout", "5s", "-s", str(LUA), url]
    cpu_before = None if server_pid is None else cpu_seconds(server_pid)
    cores_before = core_times([cpu])
    server_core = None if server_pid is None else sorted(os.sched_getaffinity(server_pid))[0]
    if server_core is not None:
        cores_before = core_times([cpu, server_core])
    started = time.monotonic()
    process = PROCS.start(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    lines: list[str] = []
    exhausted = threading.Event()

    def reader() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            lines.append(line.rstrip("\n"))
            if line.startswith(EXHAUSTED_MARKER):
                exhausted.set()

    thread = threading.Thread(target=reader, daemon=True)
    thread.start()
    if limit:
        exhausted.wait(timeout=seconds + 5)
        if process.poll() is None:
            process.send_signal(signal.SIGINT)  # wrk prints its summary and done() on SIGINT
    wrk_time = 0.0
    watchdog = threading.Timer(seconds + 30, lambda: PROCS.stop(process, signal.SIGKILL))
    watchdog.start()
    try:
        # wait4 gives the CPU time of the finished wrk (its threads included).
        _, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
        wrk_time = usage.ru_utime + usage.ru_stime
    except ChildProcessError:
        process.wait()
    finally:
        watchdog.cancel()
    wall = time.monotonic() - started
    thread.join(timeout=5)
    PROCS.stop(process)
    server_cpu = core_busy = core_steal = None
    if server_pid is not None and cpu_before is not None and server_core is not None:
        server_cpu = (cpu_seconds(server_pid) - cpu_before) / wall
        core_busy, core_steal = core_usage(cores_before, core_times([cpu, server_core]))[server_core]
    data = next(
        (json.loads(line[len(JSON_MARKER) :]) for line in lines if line.startswith(JSON_MARKER)), None
    )
    if process.returncode != 0 or data is None:
        raise BenchError(f"wrk failed ({label}), exit {process.returncode}:\n" + "\n".join(lines[-20:]))
    duration_s = data["duration_us"] / 1e6
    rps = data["requests"] / duration_s
    if limit and data["limit_elapsed_us"] > 0:
        duration_s = data["limit_elapsed_us"] / 1e6
        rps = limit / duration_s
    errors = sum(data[k] for k in ("err_connect", "err_read", "err_write", "err_timeout"))
    return WrkResult(
        label=label,
        rps=rps,
        p50_ms=data["p50_us"] / 1000,
        p90_ms=data["p90_us"] / 1000,
        p99_ms=data["p99_us"] / 1000,
        p999_ms=data["p999_us"] / 1000,
        requests=data["requests"],
        duration_s=duration_s,
        errors=errors,
        non2xx=data["err_status"],
        fallbacks=data["fallbacks"] if data["checked"] else None,
        wrapped=data["wrapped"],
        server_cpu=server_cpu,
        wrk_cpu=wrk_time / wall if wrk_time else None,
        core_busy=core_busy,
        core_steal=core_steal,
        raw=data,
    )


def describe(result: WrkResult) -> str:
    text = (
        f"{result.label}: {result.rps:,.0f} req/s, p50 {result.p50_ms:.2f} ms, p99 {result.p99_ms:.2f} ms,"
        f" {result.requests:,} requests in {result.duration_s:.1f} s"
    )
    if result.fallbacks is not None:
        text += f", fallbacks {result.fallbacks}"
    if result.server_cpu is not None:
        text += f", server CPU {result.server_cpu:.0%}"
    if result.wrk_cpu is not None:
        text += f", wrk CPU {result.wrk_cpu:.0%}"
    if result.core_busy is not None and result.server_cpu is not None:
        others = max(0.0, result.core_busy - result.server_cpu)
        text += f", server core: others {others:.0%}, steal {result.core_steal or 0:.0%}"
    return text


def require_clean(result: WrkResult, *, allow_fallbacks: bool = False) -> None:
    problems = []
    if result.errors:
        problems.append(f"{result.errors} socket errors/timeouts")
    if result.non2xx:
        problems.append(f"{result.non2xx} non-2xx responses")
    if result.fallbacks and not allow_fallbacks:
        problems.append(f"{result.fallbacks} responses with {FALLBACK_HEADER}")
    if problems:
        raise BenchError(f"{result.label}: " + ", ".join(problems))


# --- servers --------------------------------------------------------------------------------------


@dataclass
class Server:
    name: str
    process: subprocess.Popen[Any]
    base_url: str
    log_file: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def log_tail(self, lines: int = 20) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        return ""


def server_env(root: Path | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENTIME_")}
    env["PYTHONUNBUFFERED"] = "1"
    if root is not None:
        # Only that checkout: an inherited PYTHONPATH (or an installed package) must not supply `app`.
        env["PYTHONPATH"] = str(root)
    return env


def start_server(
    name: str, args: Sequence[str], port: int, log_file: Path, cpu: int, root: Path | None = None
) -> Server:
    """Start a server on ``cpu``; with ``root``, it runs in (and imports ``app`` from) that checkout."""
    env = server_env(root)
    with log_file.open("w") as out:
        process = PROCS.start(
            ["taskset", "-c", str(cpu), *args],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=root or ROOT,
        )
    server = Server(name, process, f"http://127.0.0.1:{port}", log_file)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise BenchError(f"{name} exited with {process.returncode}:\n{server.log_tail()}")
        with contextlib.suppress(httpx.TransportError):
            if httpx.get(f"{server.base_url}/readyz", timeout=1).status_code == 200:
                return server
        time.sleep(0.1)
    raise BenchError(f"{name} not ready after 60 s:\n{server.log_tail()}")


def stop_server(server: Server) -> None:
    PROCS.stop(server.process)


def note_store_reads(server: Server, before: tuple[float, float], results: Results, prefix: str = "") -> None:
    """Log and note the recipient ids per SQLite query since ``before`` (a ``store_reads`` reading)."""
    after = store_reads(server)
    batches, keys = after[0] - before[0], after[1] - before[1]
    note = f"{prefix}store reads during the cold run: {keys:,.0f} recipient ids in {batches:,.0f} queries"
    results.notes.append(f"{note} ({keys / max(batches, 1):.1f} per query)")
    log(results.notes[-1])


def store_reads(server: Server) -> tuple[float, float]:
    """The server's profile store counters from /metrics: (queries, recipient ids asked for)."""
    text = httpx.get(f"{server.base_url}/metrics", timeout=10).text
    values = {}
    for line in text.splitlines():
        name, _, value = line.partition(" ")
        if name in ("opentime_store_read_batches_total", "opentime_store_read_keys_total"):
            values[name] = float(value)
    return values["opentime_store_read_batches_total"], values["opentime_store_read_keys_total"]


def first_paths(path: Path, count: int) -> list[str]:
    with path.open(encoding="ascii") as lines:
        return [line.strip() for line in itertools.islice(lines, count)]


def check_sample(server: Server, paths: Sequence[str], *, expect_cors: bool, body_size: int | None) -> int:
    """Fail loudly unless every sampled response is a 200 JSON answer with no fallback header."""
    size = 0
    with httpx.Client(base_url=server.base_url, timeout=5) as client:
        for path in paths:
            response = client.get(path, headers={"AMP-Email-Sender": DEMO_SENDER})
            problem = None
            if response.status_code != 200:
                problem = f"status {response.status_code}"
            elif FALLBACK_HEADER in response.headers:
                problem = f"fallback ({response.headers[FALLBACK_HEADER]})"
            elif not response.headers.get("content-type", "").startswith("application/json"):
                problem = f"content-type {response.headers.get('content-type')!r}"
            elif expect_cors and response.headers.get("amp-email-allow-sender") != DEMO_SENDER:
                problem = "no AMP-Email-Allow-Sender header"
            elif body_size is not None and len(response.content) != body_size:
                problem = f"body of {len(response.content)} bytes, expected {body_size}"
            else:
                items = json.loads(response.content).get("items")
                if not isinstance(items, list) or not items:
                    problem = "no items in the body"
            if problem:
                raise BenchError(f"{server.name}: GET {path[:40]}... -> {problem}")
            size = max(size, len(response.content))
    return size


# --- profiling ------------------------------------------------------------------------------------


def profile_server(
    server: Server,
    paths: Path,
    seconds: int,
    args: argparse.Namespace,
    phase: str,
    *,
    limit: int = 0,
    root: Path = ROOT,
) -> dict[str, Any]:
    """Load the server with wrk while py-spy samples it; summarise self time per function."""
    py_spy = shutil.which("py-spy")
    if py_spy is None:
        log("py-spy not found (pip install py-spy): skipping the profile")
        return {}
    raw_file = Path(str(PROFILE_RAW).format(phase=phase))
    raw_file.parent.mkdir(parents=True, exist_ok=True)
    holder: dict[str, WrkResult] = {}

    def load() -> None:
        holder["wrk"] = run_wrk(
            f"{server.base_url}",
            paths,
            seconds=seconds + 4,
            connections=args.connections,
            cpu=args.wrk_cpu,
            limit=limit,
            label=f"profile load ({phase})",
        )

    loader = threading.Thread(target=load, daemon=True)
    loader.start()
    time.sleep(1)
    spy_args = ["taskset", "-c", str(args.wrk_cpu), py_spy, "record", "--pid", str(server.pid)]
    spy_args += [
        "--duration",
        str(seconds),
        "--rate",
        str(PROFILE_RATE),
        "--format",
        "raw",
        "-o",
        str(raw_file),
    ]
    spy = PROCS.start(spy_args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        output, _ = spy.communicate(timeout=seconds + 30)
    finally:
        PROCS.stop(spy)
    loader.join(timeout=seconds + 40)
    if spy.returncode != 0 or not raw_file.exists():
        log(f"py-spy failed (exit {spy.returncode}): {output.strip()[-500:]}")
        return {}
    summary = summarise_profile(raw_file, seconds, root)
    summary["file"] = str(raw_file)
    if "wrk" in holder:
        summary["load_rps"] = round(holder["wrk"].rps)
    return summary


def summarise_profile(raw_file: Path, seconds: int, root: Path = ROOT, top: int = 25) -> dict[str, Any]:
    """Self time (leaf frame) per function from py-spy's collapsed stacks, main thread apart.

    Thread-pool threads (the SQLite reader/writer) start at ``threading._bootstrap``; their samples
    whose leaf is ``_worker`` are idle waits for work and are only counted.
    """
    main: Counter[str] = Counter()
    workers: Counter[str] = Counter()
    areas: Counter[str] = Counter()
    idle_workers = 0
    for line in raw_file.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = stack.split(";")
        leaf = _frame_name(frames[-1], root)
        if frames[0].startswith(("_bootstrap ", "Thread._bootstrap ")):
            if leaf.startswith("_worker (concurrent/futures/thread.py"):
                idle_workers += count
            else:
                workers[leaf] += count
            continue
        main[leaf] += count
        areas[_area(leaf)] += count
    total = sum(main.values()) or 1
    expected = PROFILE_RATE * seconds

    def rows(counter: Counter[str], base: int) -> list[dict[str, Any]]:
        return [
            {"function": name, "samples": n, "percent": round(100 * n / base, 1)}
            for name, n in counter.most_common(top)
        ]

    return {
        "samples": total,
        "main_thread_active": round(total / expected, 2),
        "areas": {name: round(100 * n / total, 1) for name, n in areas.most_common()},
        "top_self": rows(main, total),
        "worker_busy_samples": sum(workers.values()),
        "worker_idle_samples": idle_workers,
        "worker_top_self": rows(workers, total)[:8],
    }


def _area(leaf: str) -> str:
    where = leaf.rpartition(" (")[2]
    if where.startswith(("app/", "uvicorn/", "starlette/", "asyncio/", "concurrent/")):
        return where.split("/", 1)[0]
    if where.startswith("bench/"):
        return "bench"
    return "other (stdlib, C loop)" if "Runner.run" not in leaf else "uvloop C loop (Runner.run leaf)"


def _frame_name(frame: str, root: Path = ROOT) -> str:
    """``func (path/to/file.py:123)`` -> ``func (file path from the package root)``.

    ``root`` is the profiled server's checkout (``--source``), which may not be the bench's own.
    """
    name, _, where = frame.partition(" (")
    where = where.rstrip(")").rsplit(":", 1)[0]
    for marker in ("site-packages/", "/lib/python3.11/", str(root) + "/"):
        if marker in where:
            where = where.split(marker, 1)[1]
    return f"{name} ({where})" if where else name


# --- phases ---------------------------------------------------------------------------------------


@dataclass
class Checkout:
    """A checkout of this project whose server the run measures, and that server's figures.

    Its servers run with ``cwd`` and ``PYTHONPATH`` set to ``root``, so ``python3 -m app`` imports that
    checkout's ``app`` package, whatever the bench process itself imports.
    """

    label: str  # "opentime" when measured alone; "after" (--source) and "before" (--compare-with)
    root: Path
    revision: str = ""
    warm_runs: list[WrkResult] = field(default_factory=list)
    cold_runs: list[WrkResult] = field(default_factory=list)
    rss_warm: Rss | None = None
    rss_cold: Rss | None = None

    def prefix(self) -> str:
        """A tag for notes, empty when measured alone (so the default output stays as it was)."""
        return "" if self.label == "opentime" else f"[{self.label}] "


@dataclass
class Results:
    this: Checkout
    other: Checkout | None = None  # --compare-with
    baseline: WrkResult | None = None
    warm: WrkResult | None = None
    cold: WrkResult | None = None
    baseline_runs: list[WrkResult] = field(default_factory=list)
    profiles: dict[str, Any] = field(default_factory=dict)
    steps: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def revision(root: Path) -> str:
    """The commit checked out in ``root``, marked when the working tree differs from it.

    The servers import whatever is on disk, so uncommitted edits are part of what is measured.
    """

    def git(*args: str) -> str:
        done = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, check=False)
        return done.stdout if done.returncode == 0 else ""

    commit = git("rev-parse", "HEAD").strip()
    if not commit:
        return "not a git checkout"
    changes = git("diff", "HEAD") + git("ls-files", "--others", "--exclude-standard")
    if not changes:
        return commit
    digest = hashlib.sha256(changes.encode()).hexdigest()[:12]
    return f"{commit} + uncommitted changes (diff {digest})"


def check_app(checkout: Checkout) -> None:
    """Fail unless a server started for ``checkout`` imports the ``app`` package under its root."""
    code = "import app, sys; sys.stdout.write(app.__file__)"
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=checkout.root,
        env=server_env(checkout.root),
        capture_output=True,
        text=True,
        check=False,
    )
    found = done.stdout.strip()
    if done.returncode != 0 or not Path(found).resolve().is_relative_to(checkout.root):
        raise BenchError(f"{checkout.root}: `import app` gives {found or done.stderr.strip()[-300:]!r}")
    log(f"{checkout.label}: {checkout.root} at {checkout.revision} ({found})")


@contextlib.contextmanager
def step(results: Results, name: str) -> Iterator[None]:
    started = time.monotonic()
    log(f"== {name}")
    try:
        yield
    finally:
        results.steps[name] = round(time.monotonic() - started, 1)


def run_baseline(prep: Prepared, args: argparse.Namespace, results: Results) -> None:
    port = free_port()
    cmd = [sys.executable, str(BASELINE_APP), "--port", str(port)]
    server = start_server("baseline", cmd, port, prep.folder / "baseline.log", args.server_cpu)
    try:
        check_sample(server, first_paths(prep.paths["warm"], SAMPLE_SIZE), expect_cors=False, body_size=2048)
        results.baseline = warm_up_and_measure(server, prep.paths["warm"], args, results, "baseline")
        results.baseline_runs.append(results.baseline)
    finally:
        stop_server(server)


def warm_up_and_measure(
    server: Server, paths: Path, args: argparse.Namespace, results: Results, label: str
) -> WrkResult:
    """A checked warm-up, a wait for idle CPUs, then the measured run (which must be clean too)."""
    common = {"connections": args.connections, "cpu": args.wrk_cpu}
    warm = run_wrk(
        server.base_url, paths, seconds=args.warmup, check=True, label=f"{label} warm-up", **common
    )
    require_clean(warm)
    wait_quiet(args, results, label)
    result = run_wrk(
        server.base_url, paths, seconds=args.duration, label=label, server_pid=server.pid, **common
    )
    require_clean(result)
    log(describe(result))
    return result


def each_path_once(
    server: Server,
    paths: Path,
    count: int,
    args: argparse.Namespace,
    label: str,
    *,
    seconds: int = 120,
    server_pid: int | None = None,
) -> WrkResult:
    """Request each of the first ``count`` paths exactly once (wrk stops at the last response)."""
    return run_wrk(
        server.base_url,
        paths,
        seconds=seconds,
        connections=args.connections,
        cpu=args.wrk_cpu,
        limit=count,
        label=label,
        server_pid=server_pid,
    )


def opentime_cmd(prep: Prepared) -> list[str]:
    return [sys.executable, "-m", "app", "serve", "--config", str(prep.config)]


def start_opentime(prep: Prepared, args: argparse.Namespace, side: Checkout, phase: str) -> Server:
    log_file = prep.folder / f"{side.label}-{phase}.log"
    return start_server(side.label, opentime_cmd(prep), prep.port, log_file, args.server_cpu, side.root)


def run_warm(prep: Prepared, args: argparse.Namespace, results: Results, *, side: Checkout) -> None:
    server = start_opentime(prep, args, side, "warm")
    try:
        count = prep.counts["warm"]
        fill = each_path_once(server, prep.paths["warm"], count, args, "cache fill (each warm path once)")
        require_clean(fill, allow_fallbacks=True)
        log(describe(fill))
        time.sleep(0.5)  # lookups that missed their budget finish in the background
        hits = each_path_once(server, prep.paths["warm"], count, args, "cache check (each warm path again)")
        require_clean(hits)  # no fallback at all: every warm recipient is now a cache hit
        log(describe(hits))
        prep.body_bytes = check_sample(
            server, first_paths(prep.paths["warm"], SAMPLE_SIZE), expect_cors=True, body_size=None
        )
        warm = warm_up_and_measure(server, prep.paths["warm"], args, results, f"{side.label} warm")
        side.warm_runs.append(warm)
        after = each_path_once(server, prep.paths["warm"], count, args, "cache check after the run")
        require_clean(after)  # still 100% hits: the measured run never fell back to the store
        side.rss_warm = rss(server.pid, prep.database)
        log(f"RSS after the warm run: {side.rss_warm}")
        if args.profile and side is results.this and len(side.warm_runs) == args.rounds:
            log(f"profiling the warm path for {args.profile} s (py-spy, not part of the figures)")
            results.profiles["warm"] = profile_server(
                server, prep.paths["warm"], args.profile, args, "warm", root=side.root
            )
    finally:
        stop_server(server)


def note_cold_design(prep: Prepared, results: Results) -> None:
    counts = prep.counts
    design = (
        f"cold design: {counts['cold_rounds']} round(s), each on a fresh server process (empty cache):"
        f" {counts['cold_warmup']:,} other recipients warm up the code paths first; then each of"
        f" {counts['cold']:,} never-requested recipients (a different set every round) is requested"
        " exactly once (profile read from SQLite, rendered, cached); wrk stops at the last response and"
        " req/s = responses / (last response - first request); the median round is shown. The SQLite"
        " file is in the OS page cache (just written/read), so this measures the in-process cold path,"
        " not disk."
    )
    if results.other is not None:
        design += (
            " Comparing two checkouts: in a round both get the same cold set, each on its own fresh"
            " server, and each cold run is divided by that round's baseline."
        )
    log(design)
    results.notes.append(design)


def run_cold(
    prep: Prepared, args: argparse.Namespace, results: Results, *, side: Checkout, rounds: Sequence[int]
) -> None:
    """The cold rounds ``rounds`` (indexes of the never-seen sets) of ``side``, each on a fresh server."""
    if not any(note.startswith("cold design") for note in results.notes):
        note_cold_design(prep, results)
    for index in rounds:
        last = side is results.this and index == prep.counts["cold_rounds"] - 1
        side.cold_runs.append(cold_round(prep, args, results, cold_set_name(index), side, profile=last))


def cold_round(
    prep: Prepared, args: argparse.Namespace, results: Results, paths: str, side: Checkout, *, profile: bool
) -> WrkResult:
    """One cold run on a fresh server; RSS after it (the last round's is reported)."""
    counts = prep.counts
    server = start_opentime(prep, args, side, "cold")
    try:
        check_sample(
            server, first_paths(prep.paths["cold_sample"], SAMPLE_SIZE), expect_cors=True, body_size=None
        )
        warmup = each_path_once(
            server, prep.paths["cold_warmup"], counts["cold_warmup"], args, "cold warm-up"
        )
        require_clean(warmup, allow_fallbacks=True)
        log(describe(warmup))
        bound = max(30, min(300, counts["cold"] // 500))
        wait_quiet(args, results, f"{side.label} cold")
        reads_before = store_reads(server)
        cold = each_path_once(
            server,
            prep.paths[paths],
            counts["cold"],
            args,
            f"{side.label} cold",
            seconds=bound,
            server_pid=server.pid,
        )
        require_clean(cold, allow_fallbacks=True)
        log(describe(cold))
        note_store_reads(server, reads_before, results, side.prefix())
        if not cold.raw.get("exhausted"):
            raise BenchError(f"cold run hit its {bound} s bound before the cold set was exhausted")
        if cold.fallbacks:
            share = cold.fallbacks / max(1, cold.requests)
            note = f"WARNING: {side.prefix()}{cold.fallbacks:,} cold responses ({share:.1%})"
            note += " were budget fallbacks"
            results.notes.append(note)
            log(note)
        side.rss_cold = rss(server.pid, prep.database)
        log(f"RSS after the cold run: {side.rss_cold}")
        if profile and args.profile and counts["cold_profile"] and cold.rps:
            limit = min(counts["cold_profile"], int(cold.rps * (args.profile + 3)))
            log(f"profiling the cold path for {args.profile} s over {limit:,} more never-seen recipients")
            results.profiles["cold"] = profile_server(
                server, prep.paths["cold_profile"], args.profile, args, "cold", limit=limit, root=side.root
            )
        return cold
    finally:
        stop_server(server)


# --- report ---------------------------------------------------------------------------------------


def others_share(result: WrkResult) -> float | None:
    """Share of the server's CPU used by other processes or stolen by the hypervisor during the run."""
    if result.core_busy is None or result.server_cpu is None:
        return None
    return max(0.0, result.core_busy - result.server_cpu) + (result.core_steal or 0)


def median_index(ratios: Sequence[float], noisy: Sequence[bool]) -> int:
    """The round whose ratio is the (lower) median of the quiet rounds (of all rounds if none is quiet)."""
    candidates = [i for i in range(len(ratios)) if not noisy[i]] or list(range(len(ratios)))
    candidates.sort(key=ratios.__getitem__)
    return candidates[(len(candidates) - 1) // 2]


def pick_median_round(results: Results) -> tuple[list[float], list[bool]]:
    """Show the round whose warm ratio is the median of the quiet rounds (all rounds if none is quiet).

    A round is noisy when other processes took more than NOISY_SHARE of the server's CPU in either run.
    Returns every round's ratio and whether it was noisy.
    """
    pairs = list(zip(results.baseline_runs, results.this.warm_runs, strict=True))
    ratios = [warm.rps / base.rps for base, warm in pairs]
    noisy = [any((others_share(r) or 0) > NOISY_SHARE for r in pair) for pair in pairs]
    results.baseline, results.warm = pairs[median_index(ratios, noisy)]
    return ratios, noisy


def lower_median(runs: Sequence[WrkResult]) -> WrkResult:
    """The median run by req/s (the lower middle one of an even count)."""
    ranked = sorted(runs, key=lambda run: run.rps)
    return ranked[(len(ranked) - 1) // 2]


def median_baseline_rps(results: Results) -> float:
    """The cold runs are compared with the median of every baseline run (they are not paired)."""
    return lower_median(results.baseline_runs).rps


@dataclass
class SideFigures:
    """One checkout's ratios against the baseline of the same round, and its median rounds."""

    checkout: Checkout
    warm_ratios: list[float]
    cold_ratios: list[float]
    warm_round: int  # index of the round whose warm ratio is the median of the quiet rounds
    cold_round: int

    @property
    def warm(self) -> float:
        return self.warm_ratios[self.warm_round]

    @property
    def cold(self) -> float:
        return self.cold_ratios[self.cold_round]


@dataclass
class Comparison:
    before: SideFigures
    after: SideFigures
    others: list[float]  # per round, the largest "others" share among the round's five runs
    noisy: list[bool]


def compare(results: Results) -> Comparison:
    """Both checkouts' ratios per round; one noise verdict per round, so both medians use the same rounds."""
    assert results.other is not None
    sides = (results.other, results.this)
    columns = [results.baseline_runs, *(runs for side in sides for runs in (side.warm_runs, side.cold_runs))]
    others = [max(others_share(run) or 0 for run in runs) for runs in zip(*columns, strict=True)]
    noisy = [share > NOISY_SHARE for share in others]
    before, after = (side_figures(results, side, noisy) for side in sides)
    return Comparison(before, after, others, noisy)


def side_figures(results: Results, side: Checkout, noisy: Sequence[bool]) -> SideFigures:
    bases = [run.rps for run in results.baseline_runs]
    warm = [run.rps / base for run, base in zip(side.warm_runs, bases, strict=True)]
    cold = [run.rps / base for run, base in zip(side.cold_runs, bases, strict=True)]
    return SideFigures(side, warm, cold, median_index(warm, noisy), median_index(cold, noisy))


Row = tuple[str, WrkResult, str, float]  # name, run, target, the baseline req/s it is divided by


@dataclass
class Summary:
    """What the report shows of the after (or only) checkout, and the table's rows."""

    warm_ratio: float  # the median ones, as shown in the table
    cold_ratio: float
    warm_ratios: list[float]
    noisy: list[bool]
    cold_ratios: list[float]
    rows: list[Row]


def summarise_alone(results: Results) -> Summary:
    """One checkout: paired baseline/warm rounds, cold rounds against the median baseline."""
    ratios, noisy = pick_median_round(results)
    results.cold = lower_median(results.this.cold_runs)
    assert results.baseline is not None and results.warm is not None
    cold_base = median_baseline_rps(results)
    base = results.baseline.rps
    rows: list[Row] = [
        ("baseline (Starlette, 2 KB const)", results.baseline, "", base),
        ("opentime warm (cache hit)", results.warm, f">={WARM_TARGET}", base),
        ("opentime cold (SQLite)", results.cold, f">={COLD_TARGET}", cold_base),
    ]
    cold_ratios = [run.rps / cold_base for run in results.this.cold_runs]
    warm_ratio = results.warm.rps / base
    return Summary(warm_ratio, results.cold.rps / cold_base, ratios, noisy, cold_ratios, rows)


def summarise_compared(results: Results, comparison: Comparison) -> Summary:
    """Two checkouts: every run is divided by its own round's baseline; rows show each median round."""
    after = comparison.after
    results.baseline = results.baseline_runs[after.warm_round]
    results.warm = results.this.warm_runs[after.warm_round]
    results.cold = results.this.cold_runs[after.cold_round]
    rows: list[Row] = [("baseline (Starlette, 2 KB const)", results.baseline, "", results.baseline.rps)]
    for figures in (after, comparison.before):
        side, bases = figures.checkout, results.baseline_runs
        warm, cold = side.warm_runs[figures.warm_round], side.cold_runs[figures.cold_round]
        rows.append(
            (f"{side.label} warm (cache hit)", warm, f">={WARM_TARGET}", bases[figures.warm_round].rps)
        )
        rows.append((f"{side.label} cold (SQLite)", cold, f">={COLD_TARGET}", bases[figures.cold_round].rps))
    return Summary(after.warm, after.cold, after.warm_ratios, comparison.noisy, after.cold_ratios, rows)


def check_revisions(results: Results) -> None:
    """Warn when a checkout changed during the run: its rounds may have measured different code."""
    for side in checkouts(results):
        now = revision(side.root)
        if now != side.revision:
            note = (
                f"WARNING: {side.label} checkout {side.root} changed during the run: {side.revision} -> {now}"
            )
            results.notes.append(note)
            log(note)


def checkouts(results: Results) -> list[Checkout]:
    return [results.this] if results.other is None else [results.this, results.other]


def report(prep: Prepared, args: argparse.Namespace, results: Results) -> float:
    check_revisions(results)
    comparison = None if results.other is None else compare(results)
    summary = summarise_alone(results) if comparison is None else summarise_compared(results, comparison)
    print()
    print(
        f"amp-list benchmark: {prep.store_rows:,} recipients in the store, {args.connections} connections,"
        f" {args.duration} s runs, server on CPU {args.server_cpu}, wrk on CPU {args.wrk_cpu}"
    )
    print(
        f"warm set {prep.counts['warm']:,} distinct recipients (cache ~100% hit);"
        f" cold set {prep.counts['cold']:,} never-requested recipients, each requested once"
    )
    print(f"opentime body {prep.body_bytes} B (picks.json, 4 items), baseline body 2048 B")
    if comparison is None:
        print_rounds(results, summary)
    else:
        print_comparison(results, comparison)
    print()
    print_table(summary.rows)
    print()
    print_rss(prep, results)
    print_profiles(results)
    for note in results.notes:
        if note.startswith("WARNING"):
            print(note)
    print("\nsteps: " + ", ".join(f"{name} {seconds:.0f} s" for name, seconds in results.steps.items()))
    payload = results_json(prep, args, results, summary, comparison)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    print(f"results: {RESULTS.relative_to(ROOT)}")
    if comparison is not None:
        print(
            " | ".join(
                f"{f.checkout.label}: warm {f.warm:.2f} cold {f.cold:.2f}"
                for f in comparison_sides(comparison)
            )
        )
    return summary.warm_ratio


def comparison_sides(comparison: Comparison) -> tuple[SideFigures, SideFigures]:
    return comparison.before, comparison.after


def print_rounds(results: Results, summary: Summary) -> None:
    """One checkout: the rounds' ratios, when there is more than one round."""
    ratios, noisy = summary.warm_ratios, summary.noisy
    if len(ratios) > 1:
        listed = ", ".join(f"{r:.2f}{' (noisy)' if n else ''}" for r, n in zip(ratios, noisy, strict=True))
        print(
            f"{len(ratios)} alternating baseline/warm rounds, warm ratios {listed};"
            f" shown: the median of the quiet rounds (noisy: others > {NOISY_SHARE:.0%} of the server CPU)"
        )
    if len(summary.cold_ratios) > 1:
        print(
            f"{len(summary.cold_ratios)} cold rounds (fresh server, distinct never-seen recipients each),"
            f" cold ratios {', '.join(f'{r:.2f}' for r in summary.cold_ratios)} against the median baseline"
            f" ({median_baseline_rps(results):,.0f} req/s); shown: the median"
        )


def round_order(index: int) -> tuple[str, str]:
    """Which checkout runs first in round ``index`` (from 0): alternating, so drift hits both alike."""
    return ("before", "after") if index % 2 == 0 else ("after", "before")


def print_comparison(results: Results, comparison: Comparison) -> None:
    """Two checkouts: where each is, then every round's req/s and ratios, and the medians."""
    before, after = comparison.before, comparison.after
    print()
    for figures, option in ((before, "--compare-with"), (after, "--source")):
        side = figures.checkout
        print(f"{side.label:<6} {'(' + option + '):':<17} {side.root} at {side.revision}")
    order = ", ".join(f"#{i + 1} {round_order(i)[0]} first" for i in range(len(comparison.noisy)))
    print(
        f"each round: the baseline, then each checkout's warm and cold runs ({order}); every warm and cold"
        f" run is divided by the baseline of its own round; medians over the quiet rounds (noisy: others >"
        f" {NOISY_SHARE:.0%} of the server CPU in any run of the round)"
    )
    print()
    columns = ["round", "baseline", "before warm", "before cold", "after warm", "after cold"]
    columns += ["before w / c", "after w / c", "others"]
    widths = (8, 9, 12, 12, 11, 11, 13, 13, 12)
    header = _row(columns, widths)
    print(header)
    print("-" * len(header))
    runs = [results.baseline_runs]
    for side in (before.checkout, after.checkout):
        runs += [side.warm_runs, side.cold_runs]
    for index, round_runs in enumerate(zip(*runs, strict=True)):
        noisy = " (noisy)" if comparison.noisy[index] else ""
        cells = [f"#{index + 1}", *(f"{run.rps:,.0f}" for run in round_runs)]
        cells += [_pair(f.warm_ratios[index], f.cold_ratios[index]) for f in (before, after)]
        cells.append(f"{comparison.others[index]:.0%}{noisy}")
        print(_row(cells, widths))
    medians = [f"{lower_median(column).rps:,.0f}" for column in runs]
    print(
        _row(["median", *medians, _pair(before.warm, before.cold), _pair(after.warm, after.cold), ""], widths)
    )
    print("others: the largest share of the server's CPU taken by other processes in any run of the round")


def _pair(warm: float, cold: float) -> str:
    return f"{warm:.2f} / {cold:.2f}"


def print_table(rows: Sequence[Row]) -> None:
    columns = ["server", "req/s", "p50 ms", "p99 ms", "vs base", "target", "CPU us/req", "srv CPU", "wrk CPU"]
    columns.append("others")
    widths = (32, 8, 7, 7, 7, 6, 10, 7, 7, 6)
    header = _row(columns, widths)
    print(header)
    print("-" * len(header))
    for name, result, target, against in rows:
        per_request = "" if result.server_cpu is None else f"{1e6 * result.server_cpu / result.rps:.0f}"
        cells = (
            name,
            f"{result.rps:,.0f}",
            f"{result.p50_ms:.2f}",
            f"{result.p99_ms:.2f}",
            f"{result.rps / against:.2f}x",
            target,
            per_request,
            _share(result.server_cpu),
            _share(result.wrk_cpu),
            _share(others_share(result)),
        )
        print(_row(cells, widths))
    print(
        "CPU us/req: server CPU time per request; srv CPU / wrk CPU: CPU time of the server / wrk over"
        " the run; others: other processes and hypervisor steal on the server's CPU"
    )


def print_rss(prep: Prepared, results: Results) -> None:
    print(f"RSS (VmRSS) target <= {RSS_TARGET_MB:.0f} MB with {prep.store_rows:,} recipients in the store:")
    for side in checkouts(results):
        assert side.rss_warm is not None
        print(f"  {side.prefix()}after the warm run: {side.rss_warm}")
        if side.rss_cold is not None:
            print(f"  {side.prefix()}after the cold run: {side.rss_cold} (response cache filled)")


def print_profiles(results: Results) -> None:
    for phase, summary in results.profiles.items():
        if summary.get("top_self"):
            print(
                f"\npy-spy self time, {phase} path, main thread ({summary['samples']:,} samples,"
                f" active {summary['main_thread_active']:.0%} of the time; {summary['file']}):"
            )
            print("  by area: " + ", ".join(f"{name} {pct}%" for name, pct in summary["areas"].items()))
            for row in summary["top_self"][:15]:
                print(f"  {row['percent']:5.1f}%  {row['function']}")
            if summary["worker_busy_samples"]:
                print(f"  thread pool (SQLite) busy: {summary['worker_busy_samples']:,} samples; top:")
                for row in summary["worker_top_self"][:5]:
                    print(f"    {row['samples']:6,}  {row['function']}")


def results_json(
    prep: Prepared,
    args: argparse.Namespace,
    results: Results,
    summary: Summary,
    comparison: Comparison | None,
) -> dict[str, Any]:
    this = results.this
    payload = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "store_recipients": prep.store_rows,
        "connections": args.connections,
        "duration_s": args.duration,
        "sets": prep.counts,
        "opentime_body_bytes": prep.body_bytes,
        "ratio_warm": round(summary.warm_ratio, 3),
        "ratio_warm_rounds": [round(r, 3) for r in summary.warm_ratios],
        "ratio_cold": round(summary.cold_ratio, 3),
        "ratio_cold_rounds": [round(r, 3) for r in summary.cold_ratios],
        "cold_runs": [asdict(run) for run in this.cold_runs],
        "rss_warm_mb": None if this.rss_warm is None else asdict(this.rss_warm),
        "rss_cold_mb": None if this.rss_cold is None else asdict(this.rss_cold),
        "runs": {run.label: asdict(run) for _, run, _, _ in summary.rows},
        "rounds": [
            {"baseline": asdict(b), "warm": asdict(w)}
            for b, w in zip(results.baseline_runs, this.warm_runs, strict=True)
        ],
        "checkout": {"root": str(this.root), "revision": this.revision},
        "profiles": results.profiles,
        "steps_s": results.steps,
        "notes": results.notes,
        "loadavg": Path("/proc/loadavg").read_text().split()[:3],
    }
    if comparison is not None:
        payload["compare"] = comparison_json(results, comparison)
    return payload


def comparison_json(results: Results, comparison: Comparison) -> dict[str, Any]:
    """Both checkouts' figures; every ratio is against the baseline of the same round."""
    sides = {}
    for figures in comparison_sides(comparison):
        side = figures.checkout
        sides[side.label] = {
            "root": str(side.root),
            "revision": side.revision,
            "ratio_warm": round(figures.warm, 3),
            "ratio_cold": round(figures.cold, 3),
            "ratio_warm_rounds": [round(r, 3) for r in figures.warm_ratios],
            "ratio_cold_rounds": [round(r, 3) for r in figures.cold_ratios],
            "warm_runs": [asdict(run) for run in side.warm_runs],
            "cold_runs": [asdict(run) for run in side.cold_runs],
            "rss_warm_mb": None if side.rss_warm is None else asdict(side.rss_warm),
            "rss_cold_mb": None if side.rss_cold is None else asdict(side.rss_cold),
        }
    return {
        "order": [f"{round_order(i)[0]} first" for i in range(len(comparison.noisy))],
        "baseline_runs": [asdict(run) for run in results.baseline_runs],
        "others_rounds": [round(share, 3) for share in comparison.others],
        "noisy_rounds": comparison.noisy,
        **sides,
    }


def _row(cells: Sequence[str], widths: Sequence[int]) -> str:
    first = f"{cells[0]:<{widths[0]}}"
    return " ".join([first, *(f"{c:>{w}}" for c, w in zip(cells[1:], widths[1:], strict=True))])


def _share(value: float | None) -> str:
    return "" if value is None else f"{value:.0%}"


# --- main -----------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Benchmark opentime's amp-list endpoint against a bare Starlette route (see module doc)."
    )
    parser.add_argument("--recipients", type=int, default=None, help="store size (default 100,000)")
    parser.add_argument(
        "--rss-recipients", type=int, default=None, help="store size for the whole run, e.g. 1000000"
    )
    parser.add_argument("--duration", type=int, default=None, help="seconds per measured run (default 30)")
    parser.add_argument("--warmup", type=int, default=None, help="seconds of wrk warm-up (default 5)")
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="alternate baseline and warm runs N times and run N cold rounds; report the medians",
    )
    parser.add_argument("--warm-recipients", type=int, default=None, help="distinct warm recipients (10,000)")
    parser.add_argument("--cold-recipients", type=int, default=None, help="cold set size (default 100,000)")
    parser.add_argument("--cold-warmup", type=int, default=None, help="cold warm-up set size (10,000)")
    parser.add_argument("--profile", type=int, default=0, metavar="SECONDS", help="py-spy each path (0: off)")
    parser.add_argument("--quick", action="store_true", help="short runs on a small store (smoke check)")
    parser.add_argument("--workdir", type=Path, default=None, help="keep files here; reuses a loaded store")
    parser.add_argument(
        "--prepare-only", action="store_true", help="only build the store and path files in --workdir"
    )
    parser.add_argument("--server-cpu", type=int, default=0)
    parser.add_argument("--wrk-cpu", type=int, default=1)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "--wait-idle", type=int, default=120, metavar="SECONDS", help="max wait for idle CPUs before a run"
    )
    parser.add_argument(
        "--source",
        type=Path,
        default=ROOT,
        metavar="DIR",
        help="checkout whose server is measured (default: this script's); 'after' when comparing",
    )
    parser.add_argument(
        "--compare-with",
        type=Path,
        default=None,
        metavar="DIR",
        help="another checkout measured in the same run, reported as 'before'",
    )
    args = parser.parse_args(argv)
    quick = args.quick
    defaults: dict[str, int] = {
        "recipients": 20_000 if quick else 100_000,
        "duration": 3 if quick else 30,
        "warmup": 1 if quick else 5,
        "warm_recipients": 2_000 if quick else 10_000,
        "cold_recipients": 10_000 if quick else 100_000,
        "cold_warmup": 2_000 if quick else 10_000,
    }
    for name, value in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    if not 1 <= args.duration <= MAX_DURATION:
        parser.error(f"--duration must be 1-{MAX_DURATION} s (cached bodies live 300 s)")
    if not 1 <= args.connections <= 1000:
        parser.error("--connections must be 1-1000")
    if not 1 <= args.rounds <= 5:
        parser.error("--rounds must be 1-5")
    if not 0 <= args.profile <= 60:
        parser.error("--profile must be 0-60 s")
    if args.prepare_only and args.workdir is None:
        parser.error("--prepare-only needs --workdir")
    for name in ("source", "compare_with"):
        folder = getattr(args, name)
        if folder is not None and not (folder / "app" / "__main__.py").is_file():
            parser.error(
                f"--{name.replace('_', '-')} {folder}: no app/__main__.py (not a checkout of opentime)"
            )
    args.source = args.source.resolve()
    if args.compare_with is not None:
        args.compare_with = args.compare_with.resolve()
        if args.compare_with == args.source:
            parser.error("--compare-with names the same checkout as --source")
    store = args.rss_recipients or args.recipients
    if not 2_000 <= store <= 5_000_000:
        parser.error("the store must hold 2,000 to 5,000,000 recipients")
    return args


def preflight(args: argparse.Namespace) -> None:
    missing = [tool for tool in ("wrk", "taskset") if shutil.which(tool) is None]
    if missing:
        sys.exit(
            f"error: {' and '.join(missing)} not found. Install with:"
            " apt-get update && apt-get install -y wrk util-linux"
        )
    cpus = os.sched_getaffinity(0)
    for name in ("server_cpu", "wrk_cpu"):
        if getattr(args, name) not in cpus:
            sys.exit(
                f"error: CPU {getattr(args, name)} (--{name.replace('_', '-')}) is not available: {cpus}"
            )
    if args.server_cpu == args.wrk_cpu:
        sys.exit("error: the server and wrk must run on different CPUs")


Phase = Callable[[Prepared, argparse.Namespace, Results], None]


def plan_phases(args: argparse.Namespace, results: Results) -> list[tuple[str, Phase]]:
    """Alone: alternating baseline and warm rounds, then the cold rounds (the order since the start)."""
    if results.other is not None:
        return plan_compared(args, results)
    this = results.this
    phases: list[tuple[str, Phase]] = []
    for index in range(1, args.rounds + 1):
        suffix = f" #{index}" if args.rounds > 1 else ""
        warm = functools.partial(run_warm, side=this)
        phases += [("baseline" + suffix, run_baseline), ("opentime warm (A, C)" + suffix, warm)]
    phases.append(("opentime cold (B)", functools.partial(run_cold, side=this, rounds=range(args.rounds))))
    return phases


def plan_compared(args: argparse.Namespace, results: Results) -> list[tuple[str, Phase]]:
    """Two checkouts: each round is the baseline, then each checkout's warm and cold runs.

    Every run of a round is divided by that round's baseline, so the checkouts never compare across
    rounds; which one goes first alternates, so a slow drift (thermal, a neighbour) favours neither.
    """
    assert results.other is not None
    sides = {"before": results.other, "after": results.this}
    phases: list[tuple[str, Phase]] = []
    for index in range(args.rounds):
        phases.append((f"baseline #{index + 1}", run_baseline))
        for label in round_order(index):
            side = sides[label]
            phases.append((f"{label} warm #{index + 1}", functools.partial(run_warm, side=side)))
            cold = functools.partial(run_cold, side=side, rounds=[index])
            phases.append((f"{label} cold #{index + 1}", cold))
    return phases


def checkouts_from(args: argparse.Namespace) -> tuple[Checkout, Checkout | None]:
    if args.compare_with is None:
        return Checkout("opentime", args.source, revision(args.source)), None
    this = Checkout("after", args.source, revision(args.source))
    return this, Checkout("before", args.compare_with, revision(args.compare_with))


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    preflight(args)
    signal.signal(signal.SIGTERM, _on_sigterm)
    store_rows: int = args.rss_recipients or args.recipients
    this, other = checkouts_from(args)
    results = Results(this, other)
    temp: str | None = None
    if args.workdir is None:
        temp = tempfile.mkdtemp(prefix="opentime-bench-")
    folder = args.workdir.resolve() if args.workdir is not None else Path(temp or ".")
    phases = plan_phases(args, results)
    try:
        for side in checkouts(results):
            check_app(side)
        with step(results, "prepare"):
            prep = prepare(folder, store_rows, args)
        if args.prepare_only:
            log(f"prepared {folder} in {results.steps['prepare']:.0f} s")
            return 0
        for name, phase in phases:
            with step(results, name):
                phase(prep, args, results)
        ratio = report(prep, args, results)
    except BenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    finally:
        PROCS.stop_all()
        if temp is not None:
            shutil.rmtree(temp, ignore_errors=True)
    print(f"ratio={ratio:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
