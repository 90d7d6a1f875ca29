"""Several nodes on one PostgreSQL and one Redis: open-time throughput by tier, and cross-node freshness.

    python3 -m bench.nodes                         # 100,000 recipients, 3 rounds of 10 s, ~4 min
    python3 -m bench.nodes --quick                 # smoke check, ~1 min
    python3 -m bench.nodes --pg-url postgresql://127.0.0.1:5432/test --redis-url redis://127.0.0.1:6379/0

From the repository root; loopback only. Needs wrk (``apt-get install -y wrk``), taskset, two CPUs, and
the PostgreSQL and Redis servers named by ``--pg-url`` / ``--redis-url`` (``bash tools/start-services.sh``
starts the local ones). The run creates its own database (``opentime_bench_<random>``, dropped at the
end) and its own Redis key prefix (deleted at the end); nothing else on those servers is touched.

Every figure is divided by a bare Starlette route (``bench/baseline_app.py``, the same baseline as
``bench/amp_list.py``) measured in the same round. Each opentime node is ``python3 -m app serve`` with
``database_url`` on PostgreSQL and ``redis_url`` set; servers are pinned to CPU 0, and wrk, the local
PostgreSQL and Redis to CPU 1 (as if those ran on hosts of their own; ``--no-pin-services`` leaves the
services where they are, sharing both CPUs). Per round:

1. baseline: the warm paths against the bare route;
2. node A, local hit: every warm path once (fills A's in-process cache and Redis), again (all hits),
   then the measured wrk run over them; then every "tier" path once (fills Redis with their profiles),
   and once more through a fresh node (fills that Redis timed out on, on a busy machine, or that were
   in flight when A stopped);
3. node B, a fresh process: a warm-up set once (code paths), then each "tier" path exactly once: a
   local miss answered from Redis (checked: B's store reads for them stay at zero); then each "cold"
   path exactly once: never seen by any node, so local miss, Redis miss, PostgreSQL read, Redis fill
   (checked: B's store reads for them are at least one per path).

Then, with A and B both up: event -> visible across nodes (POST a signed event to A, poll B until the
list shows it; p50/p99 over ``--samples``). The 1M-profile import into PostgreSQL has its own script,
``bench/pg_import.py``.

Prints a table and writes ``bench/results/nodes.json``. Beside each rate ratio, the "CPU ratio" is the
bare route's server CPU per request over the path's, per round: what the rate ratio is when the
server's core is the bottleneck, and far steadier when other processes take a share of that core
(the rate ratio then measures the scheduler as much as the server).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
import orjson

from app.cli.serve import write_toml
from app.config import load_settings
from app.demo import DEMO_SENDER, demo_rows, recipient_id
from app.security.keyring import new_keyring, save_keyring
from app.security.tokens import TokenSigner
from app.security.webhook_auth import sign_header
from app.store import open_store
from bench.amp_list import (
    BASELINE_APP,
    BLOCK,
    CAMPAIGN,
    LOAD_BATCH,
    PROCS,
    BenchError,
    Server,
    WrkResult,
    _write_paths,
    cpu_seconds,
    describe,
    free_port,
    log,
    require_clean,
    run_wrk,
    start_server,
    stop_server,
    store_reads,
)
from bench.events import latency_summary

RESULTS = Path(__file__).resolve().parent / "results" / "nodes.json"
SECRET = "bench-nodes-webhook-secret-0123456789"  # noqa: S105 (a throwaway secret of this run)
TARGETS = {"local_hit": 0.9, "redis_hit": 0.5, "cold_pg": 0.4}


@dataclass
class Setup:
    folder: Path
    pg_url: str  # the run's own database
    redis_url: str
    prefix: str
    signer: TokenSigner
    keys_file: Path
    paths: dict[str, Path] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)


# --- PostgreSQL database and Redis prefix of this run ---------------------------------------------


def _with_database(url: str, database: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, f"/{database}", parts.query, parts.fragment))


def _psql(admin_url: str, sql: str) -> None:
    subprocess.run(["psql", admin_url, "-v", "ON_ERROR_STOP=1", "-q", "-c", sql], check=True)


@contextlib.contextmanager
def fresh_database(admin_url: str) -> Iterator[str]:
    name = f"opentime_bench_{secrets.token_hex(4)}"
    _psql(admin_url, f"CREATE DATABASE {name}")
    try:
        yield _with_database(admin_url, name)
    finally:
        _psql(admin_url, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def drop_prefix(redis_url: str, prefix: str) -> None:
    host = urlsplit(redis_url)
    args = ["redis-cli", "-h", host.hostname or "127.0.0.1", "-p", str(host.port or 6379)]
    keys = subprocess.run([*args, "--scan", "--pattern", f"{prefix}*"], capture_output=True, text=True)
    names = keys.stdout.split()
    for start in range(0, len(names), 500):
        subprocess.run([*args, "del", *names[start : start + 500]], capture_output=True, check=False)


@contextlib.contextmanager
def services_on(cpu: int) -> Iterator[None]:
    """Local PostgreSQL and Redis run on ``cpu`` (wrk's) for the run, as on hosts of their own in a
    deployment: unpinned, they took up to a fifth of the server's core in some rounds, and the ratios
    then measured the machine's scheduling rather than the server. Their affinity is restored after."""
    found = [
        subprocess.run(["pgrep", "-x", name], capture_output=True, text=True).stdout.split()
        for name in ("postgres", "redis-server")
    ]
    saved: dict[int, set[int]] = {}
    for pid in (int(p) for names in found for p in names):
        with contextlib.suppress(OSError):
            saved[pid] = os.sched_getaffinity(pid)
            os.sched_setaffinity(pid, {cpu})
    log(f"PostgreSQL and Redis ({len(saved)} processes) pinned to CPU {cpu} for the run")
    try:
        yield
    finally:
        for pid, cpus in saved.items():
            with contextlib.suppress(OSError):
                os.sched_setaffinity(pid, cpus)


# --- preparation ----------------------------------------------------------------------------------


async def load_profiles(database_url: str, rows: int) -> float:
    store = open_store(database_url)
    await store.open()
    started = time.monotonic()
    try:
        source = demo_rows(rows)
        loaded = 0
        while batch := [row for _, row in zip(range(LOAD_BATCH), source, strict=False)]:
            await store.profiles.upsert_many(batch)
            loaded += len(batch)
        return time.monotonic() - started
    finally:
        await store.close()


def plan(rows: int, args: argparse.Namespace) -> dict[str, int]:
    warm = min(args.warm, rows // 4)
    per_round = min(args.cold, (rows - warm) // (args.rounds * 3 + 1))
    if per_round < 500:
        raise BenchError(f"{rows:,} recipients are too few for {args.rounds} rounds")
    return {"warm": warm, "per_round": per_round}


def prepare(folder: Path, pg_url: str, args: argparse.Namespace) -> Setup:
    ring = new_keyring(datetime.now(UTC))
    keys_file = folder / "keys.json"
    save_keyring(ring, keys_file, overwrite=True)
    log(f"loading {args.recipients:,} recipients into PostgreSQL")
    seconds = asyncio.run(load_profiles(pg_url, args.recipients))
    log(f"  loaded in {seconds:.1f} s ({args.recipients / seconds:,.0f} rows/s)")
    setup = Setup(
        folder, pg_url, args.redis_url, f"otbench{secrets.token_hex(3)}:", TokenSigner(ring), keys_file
    )
    setup.counts = plan(args.recipients, args)
    extra = args.connections + 10  # wrk's requests in flight when a limited set is exhausted
    picked = random.Random(args.seed).sample(range(1, args.recipients + 1), args.recipients)
    sizes = [("warm", setup.counts["warm"])]
    for index in range(args.rounds):
        n = setup.counts["per_round"]
        sizes += [(f"warmup_{index}", n), (f"tier_{index}", n + extra), (f"cold_{index}", n + extra)]
    stamp, offset = int(time.time()), 0
    for name, size in sizes:
        if offset + size > len(picked):
            raise BenchError("not enough recipients for the planned sets")
        setup.paths[name] = folder / f"paths-{name}.txt"
        _write_paths(setup.paths[name], setup.signer, picked[offset : offset + size], stamp)
        offset += size
    return setup


def node_config(setup: Setup, name: str, port: int) -> Path:
    settings = load_settings(
        {},
        None,
        public_base_url=f"http://127.0.0.1:{port}",
        keys_file=str(setup.keys_file),
        allowed_senders=DEMO_SENDER,
        database_url=setup.pg_url,
        redis_url=setup.redis_url,
        redis_key_prefix=setup.prefix,
        webhook_secrets=SECRET,
        host="127.0.0.1",
        port=port,
        workers=1,
    ).settings
    return write_toml(setup.folder / f"{name}.toml", settings)


# --- servers and runs -----------------------------------------------------------------------------


def start_node(setup: Setup, name: str, args: argparse.Namespace) -> Server:
    port = free_port()
    config = node_config(setup, name, port)
    cmd = [sys.executable, "-m", "app", "serve", "--config", str(config)]
    return start_server(name, cmd, port, setup.folder / f"{name}.log", args.server_cpu)


def once(server: Server, paths: Path, count: int, args: argparse.Namespace, label: str) -> WrkResult:
    """Each of the first ``count`` paths exactly once; wrk stops at the last response."""
    started = cpu_seconds(server.pid)
    result = run_wrk(
        server.base_url,
        paths,
        seconds=120,
        connections=args.connections,
        cpu=args.wrk_cpu,
        limit=count,
        label=label,
        server_pid=server.pid,
        check=True,
    )
    _count_cpu(result, server, started)
    require_clean(result, allow_fallbacks=True)
    if not result.raw.get("exhausted"):
        raise BenchError(f"{label}: the set was not exhausted within 120 s")
    log(describe(result))
    return result


def measured(server: Server, paths: Path, args: argparse.Namespace, label: str) -> WrkResult:
    common = {"connections": args.connections, "cpu": args.wrk_cpu}
    require_clean(run_wrk(server.base_url, paths, seconds=2, check=True, label=f"{label} warm-up", **common))
    started = cpu_seconds(server.pid)
    result = run_wrk(
        server.base_url, paths, seconds=args.duration, label=label, server_pid=server.pid, **common
    )
    _count_cpu(result, server, started)
    require_clean(result)
    log(describe(result))
    return result


def _count_cpu(result: WrkResult, server: Server, started: float) -> None:
    """The server's CPU seconds over the run, kept with the result for ``cpu_per_request``."""
    result.raw["server_cpu_seconds"] = cpu_seconds(server.pid) - started


def baseline(setup: Setup, args: argparse.Namespace) -> WrkResult:
    port = free_port()
    cmd = [sys.executable, str(BASELINE_APP), "--port", str(port)]
    server = start_server("baseline", cmd, port, setup.folder / "baseline.log", args.server_cpu)
    try:
        return measured(server, setup.paths["warm"], args, "baseline")
    finally:
        stop_server(server)


def run_round(setup: Setup, args: argparse.Namespace, index: int) -> dict[str, Any]:
    n = setup.counts["per_round"]
    figures: dict[str, Any] = {"baseline": baseline(setup, args)}
    node_a = start_node(setup, f"a{index}", args)
    try:
        warm = setup.counts["warm"]
        once(node_a, setup.paths["warm"], warm, args, "A: fill (each warm path once)")
        hits = once(node_a, setup.paths["warm"], warm, args, "A: all hits check")
        if hits.fallbacks:
            raise BenchError(f"A: {hits.fallbacks} fallbacks on the second pass over the warm set")
        figures["local_hit"] = measured(node_a, setup.paths["warm"], args, "A: local hit")
        once(node_a, setup.paths[f"tier_{index}"], n, args, "A: fill Redis with the tier set")
    finally:
        stop_server(node_a)
    # Fills Redis timed out on (a busy machine) or that were in flight when A stopped: a fresh node's
    # pass over the set puts them in (a Redis hit, or a store read and a fill, for each path).
    top_up = start_node(setup, f"t{index}", args)
    try:
        once(top_up, setup.paths[f"tier_{index}"], n, args, "A2: top up Redis with the tier set")
    finally:
        stop_server(top_up)
    node_b = start_node(setup, f"b{index}", args)
    try:
        once(node_b, setup.paths[f"warmup_{index}"], n, args, "B: code warm-up (cold)")
        before = store_reads(node_b)
        figures["redis_hit"] = once(node_b, setup.paths[f"tier_{index}"], n, args, "B: local miss, Redis hit")
        reads = store_reads(node_b)[1] - before[1]
        figures["redis_hit_store_reads"] = reads
        if reads > n * 0.01:
            raise BenchError(f"B read {reads:,.0f} profiles from PostgreSQL for {n:,} Redis-tier opens")
        before = store_reads(node_b)
        figures["cold_pg"] = once(node_b, setup.paths[f"cold_{index}"], n, args, "B: cold (PostgreSQL)")
        reads = store_reads(node_b)[1] - before[1]
        figures["cold_store_reads"] = reads
        if reads < n:  # every cold open must have missed both tiers and read its profile
            raise BenchError(f"B read {reads:,.0f} profiles from PostgreSQL for {n:,} cold opens")
    finally:
        stop_server(node_b)
    return figures


# --- event -> visible across nodes ----------------------------------------------------------------


def signed(body: bytes) -> dict[str, str]:
    return {
        "content-type": "application/json",
        "opentime-signature": sign_header([SECRET], int(time.time()), body),
    }


async def cross_node(a: str, b: str, signer: TokenSigner, recipients: Sequence[str]) -> dict[str, float]:
    """Per sample: B caches the list, an event is accepted by A, then B is polled until it shows it."""
    latencies: list[float] = []
    amp = {"AMP-Email-Sender": DEMO_SENDER}
    async with httpx.AsyncClient(timeout=10) as client:
        for i, recipient in enumerate(recipients):
            url = f"{b}/v1/{signer.sign(CAMPAIGN, recipient, now=int(time.time()))}/list/{BLOCK}.json"
            if (await client.get(url, headers=amp)).status_code != 200:
                raise BenchError("B did not answer the list")
            marker = f"fresh-{i}-{time.monotonic_ns()}"
            item = {"name": marker, "price": 1, "sku": "sku-x", "image": "x.jpg"}
            event = {
                "id": f"bench-{marker}",
                "type": "profile.updated",
                "recipient": recipient,
                "occurred_at": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
                "payload": {"recommendations": [item]},
            }
            body = orjson.dumps(event)
            started = time.perf_counter()
            response = await client.post(f"{a}/webhooks/events", content=body, headers=signed(body))
            if response.status_code != 200:
                raise BenchError(f"A refused the event: {response.status_code} {response.text[:200]}")
            while marker not in (await client.get(url, headers=amp)).text:
                if time.perf_counter() - started > 5:
                    raise BenchError("an event accepted by A was not visible on B within 5 s")
            latencies.append((time.perf_counter() - started) * 1000)
    return latency_summary(latencies)


def visibility(setup: Setup, args: argparse.Namespace) -> dict[str, float]:
    node_a, node_b = start_node(setup, "vis-a", args), start_node(setup, "vis-b", args)
    try:
        recipients = [recipient_id(args.recipients - i) for i in range(args.samples)]
        return asyncio.run(cross_node(node_a.base_url, node_b.base_url, setup.signer, recipients))
    finally:
        stop_server(node_a)
        stop_server(node_b)


# --- report ---------------------------------------------------------------------------------------


def cpu_per_request(result: WrkResult) -> float:
    """Server CPU time per response in microseconds: steadier than req/s on a shared machine.

    The server's CPU seconds over the wrk run divided by every response wrk received (those still in
    flight when a limited set ran out included: the server did their work too). Dividing the CPU
    share of the run's wall time by the request rate, as before, counted wrk's start and stop (the
    server idle) in the wall time but not in the rate: it under-stated the short "once" runs by up to
    a tenth, more than the steady ones."""
    cpu = result.raw.get("server_cpu_seconds")
    if cpu is None or not result.requests:
        return (result.server_cpu or 0.0) / result.rps * 1e6
    return float(cpu) / result.requests * 1e6


def ratios(rounds: list[dict[str, Any]], name: str) -> list[float]:
    return [r[name].rps / r["baseline"].rps for r in rounds]


def cpu_ratios(rounds: list[dict[str, Any]], name: str) -> list[float]:
    """Per round, the bare route's CPU per request over the path's: what the rate ratio comes to when
    the server's core is the bottleneck, without the share of the core other processes took."""
    return [cpu_per_request(r["baseline"]) / cpu_per_request(r[name]) for r in rounds]


def report(rounds: list[dict[str, Any]], extra: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"rounds": [], **extra}
    head = f"{'phase':<34}{'req/s (median)':>16}{'p50 ms':>9}{'p99 ms':>9}{'CPU us/req':>11}"
    print(f"\n{head}{'ratio':>8}{'target':>8}{'CPU ratio':>11}")
    for name, label in (
        ("baseline", "bare Starlette route"),
        ("local_hit", "A: local hit"),
        ("redis_hit", "B: local miss, Redis hit"),
        ("cold_pg", "B: cold, from PostgreSQL"),
    ):
        runs = sorted((r[name] for r in rounds), key=lambda w: w.rps)
        mid = runs[(len(runs) - 1) // 2]
        ratio = "" if name == "baseline" else f"{statistics.median(ratios(rounds, name)):.2f}"
        target = f">={TARGETS[name]}" if name in TARGETS else ""
        cpu = statistics.median(cpu_per_request(r[name]) for r in rounds)
        by_cpu = "" if name == "baseline" else f"{statistics.median(cpu_ratios(rounds, name)):.2f}"
        row = f"{label:<34}{mid.rps:>16,.0f}{mid.p50_ms:>9.2f}{mid.p99_ms:>9.2f}{cpu:>11.0f}"
        print(f"{row}{ratio:>8}{target:>8}{by_cpu:>11}")
        out[name] = {"median_rps": mid.rps, "p50_ms": mid.p50_ms, "p99_ms": mid.p99_ms, "cpu_us": cpu}
        if name in TARGETS:
            out[name]["ratios"] = ratios(rounds, name)
            out[name]["median_ratio"] = statistics.median(out[name]["ratios"])
            out[name]["cpu_ratios"] = cpu_ratios(rounds, name)
    for r in rounds:
        out["rounds"].append({k: (v.rps if isinstance(v, WrkResult) else v) for k, v in r.items()})
    if "visible" in extra:
        v = extra["visible"]
        print(
            f"\nevent on A -> visible on B: p50 {v['p50_ms']:.1f} ms, p99 {v['p99_ms']:.1f} ms"
            f" (max {v['max_ms']:.1f}, {v['samples']} samples; target p99 <= 100 ms)"
        )
    return out


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--pg-url", default="postgresql://127.0.0.1:5432/test", help="an existing database to connect to"
    )
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--recipients", type=int, default=100_000)
    parser.add_argument("--warm", type=int, default=10_000)
    parser.add_argument("--cold", type=int, default=8_000, help="recipients per tier/cold set")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--samples", type=int, default=300, help="event -> visible samples")
    parser.add_argument("--server-cpu", type=int, default=0)
    parser.add_argument("--wrk-cpu", type=int, default=1)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument(
        "--no-pin-services", action="store_true", help="leave local PostgreSQL and Redis unpinned"
    )
    parser.add_argument("--quick", action="store_true", help="20k recipients, 1 round of 3 s")
    args = parser.parse_args(argv)
    if args.quick:
        args.recipients, args.warm, args.cold, args.rounds = 20_000, 2_000, 2_000, 1
        args.duration, args.samples = 3, 50
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        with (
            contextlib.nullcontext() if args.no_pin_services else services_on(args.wrk_cpu),
            tempfile.TemporaryDirectory(prefix="opentime-bench-nodes-") as tmp,
            fresh_database(args.pg_url) as db,
        ):
            setup = prepare(Path(tmp), db, args)
            try:
                rounds = []
                for index in range(args.rounds):
                    log(f"round {index + 1}/{args.rounds}")
                    rounds.append(run_round(setup, args, index))
                extra: dict[str, Any] = {"visible": visibility(setup, args)}
            finally:
                drop_prefix(args.redis_url, setup.prefix)
            results = report(rounds, extra)
    except BenchError as exc:
        log(f"FAILED: {exc}")
        return 1
    finally:
        PROCS.stop_all()
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
