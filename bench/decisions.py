"""Benchmark the amp-list hot path (warm cache hits) with open-time decisions on and off, in one run.

    python3 -m bench.decisions                 # 3 rounds of 20 s per server
    python3 -m bench.decisions --quick         # smoke check

The same warm request paths (``demo``'s ``picks`` block, many recipients, every request a cache hit)
against three servers per round, one at a time, each pinned to CPU 0 and wrk to CPU 1 (as
``bench/amp_list.py``):

- baseline: ``bench/baseline_app.py``, the bare Starlette route ``bench/amp_list.py`` compares with;
- off: the shipped campaigns (they measure nothing, so nothing is recorded);
- on: the same campaigns where ``picks`` has two variants of equal size, a fetch-class rule and a
  date rule that are checked on every open (and do not match), then an A/B experiment with a 10%
  holdout; every open is recorded by the real exposure recorder (buffer, sampling at the default
  rate 1.0, flushes into the store's hourly counters: ``bench/decisions_server.py``);
- on+zone: as on, plus a time-of-day rule: the demo reads the reader's zone from the profile
  (``zone_field``), so every open also reads the cached profile to know the reader's local time.

The order of off/on alternates per round; the figure is the median over rounds of on ÷ off (and
on+zone ÷ off), each round's servers measured back to back. Two figures per ratio: requests per
second, and requests per second of server CPU (req/s ÷ the server process's CPU share), which
stays meaningful when other processes share the server's core (the report shows their share). The
last line is ``ratio=<on/off in req/s>``.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import shutil
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx

from app.cli.serve import write_toml
from app.config import load_settings
from app.demo import DEMO_SENDER, recipient_id
from app.security.keyring import new_keyring, save_keyring
from app.security.tokens import TokenSigner
from bench.amp_list import (
    BASELINE_APP,
    ROOT,
    Server,
    WrkResult,
    _load_store,
    describe,
    free_port,
    log,
    require_clean,
    run_wrk,
    start_server,
    stop_server,
)

SERVER = Path(__file__).resolve().parent / "decisions_server.py"
RULES = """
[experiments.picks-size]
variants = { a = 1, b = 1 }
holdout_percent = 10

[blocks.picks.variants.a]
max_items = 4

[blocks.picks.variants.b]
max_items = 4

[[blocks.picks.rules]]
fetch_class = "apple-mpp"
variant = "a"

[[blocks.picks.rules]]
before = "2001-01-01T00:00+00:00"
variant = "b"
"""
ZONED = """
[[blocks.picks.rules]]
after = "03:00"
before = "03:01"
variant = "a"
"""
EXPERIMENT = """
[[blocks.picks.rules]]
experiment = "picks-size"
"""


def templates_with(folder: Path, extra: str) -> Path:
    """The shipped campaigns with ``extra`` appended to the demo's blocks.toml."""
    shutil.copytree(ROOT / "amp_templates", folder)
    blocks = folder / "demo" / "blocks.toml"
    blocks.write_text(blocks.read_text() + extra)
    return folder


def prepare(folder: Path, recipients: int, warm: int) -> tuple[dict[str, Path], Path, int]:
    """Store, key ring, a TOML config per variant of the campaigns, and the warm paths file."""
    ring = new_keyring(datetime.now(UTC))
    keys_file = folder / "keys.json"
    save_keyring(ring, keys_file, overwrite=True)
    database_url = f"sqlite:///{folder / 'profiles.db'}"
    asyncio.run(_load_store(database_url, recipients))
    port = free_port()
    configs = {}
    for name, extra in (("off", None), ("on", RULES + EXPERIMENT), ("on+zone", RULES + ZONED + EXPERIMENT)):
        templates = ROOT / "amp_templates" if extra is None else templates_with(folder / name, extra)
        settings = load_settings(
            {},
            None,
            public_base_url=f"http://127.0.0.1:{port}",
            keys_file=str(keys_file),
            allowed_senders=DEMO_SENDER,
            database_url=database_url,
            templates_dir=str(templates),
            host="127.0.0.1",
            port=port,
        ).settings
        configs[name] = write_toml(folder / f"{name}.toml", settings)
    signer = TokenSigner(ring)
    now = int(time.time())
    paths = folder / "paths-warm.txt"
    picked = random.Random(7).sample(range(1, recipients + 1), warm)
    paths.write_text(
        "".join(f"/v1/{signer.sign('demo', recipient_id(i), now=now)}/list/picks.json\n" for i in picked)
    )
    return configs, paths, port


def measure(server: Server, paths: Path, args: argparse.Namespace, label: str) -> WrkResult:
    common = {"connections": args.connections, "cpu": args.wrk_cpu}
    fill = run_wrk(server.base_url, paths, seconds=60, limit=args.warm, label=f"{label} fill", **common)
    require_clean(fill, allow_fallbacks=True)
    time.sleep(0.5)
    warm = run_wrk(
        server.base_url, paths, seconds=args.warmup, check=True, label=f"{label} warm-up", **common
    )
    require_clean(warm)  # every answer a cache hit, no fallback
    result = run_wrk(
        server.base_url, paths, seconds=args.duration, label=label, server_pid=server.pid, **common
    )
    require_clean(result)
    log(describe(result))
    return result


def run_side(
    name: str, config: Path | None, port: int, paths: Path, args: argparse.Namespace, folder: Path
) -> WrkResult:
    if config is None:
        cmd = [sys.executable, str(BASELINE_APP), "--port", str(port)]
    else:
        cmd = [sys.executable, str(SERVER), "--config", str(config)]
    log_file = folder / f"{name}.log"
    server = start_server(name, cmd, port, log_file, args.server_cpu, ROOT)
    try:
        if config is not None:
            sample = paths.read_text().splitlines()[0]
            answer = httpx.get(
                f"{server.base_url}{sample}", headers={"AMP-Email-Sender": DEMO_SENDER}, timeout=5
            )
            assert answer.status_code == 200 and len(answer.json()["items"]) == 4, answer.text
        result = measure(server, paths, args, name)
        if config is not None:
            answer = httpx.get(f"{server.base_url}/bench/exposures", timeout=5).text
            count, dropped = (int(n) for n in answer.split())
            log(f"{name}: {count:,} exposures recorded, {dropped:,} dropped (buffer full)")
            if (count > 0) != (name != "off"):
                raise SystemExit(f"{name}: expected {'no ' if name == 'off' else ''}exposures, got {count}")
        return result
    finally:
        stop_server(server)


def per_cpu(result: WrkResult) -> float | None:
    """Requests per second of server CPU: what the server got done with the CPU it was given."""
    return None if not result.server_cpu else result.rps / result.server_cpu


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--recipients", type=int, default=20_000)
    parser.add_argument("--warm", type=int, default=5_000)
    parser.add_argument("--server-cpu", type=int, default=0)
    parser.add_argument("--wrk-cpu", type=int, default=1)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    if args.quick:
        args.rounds, args.duration, args.warmup, args.recipients, args.warm = 1, 5, 2, 2000, 1000
    folder = Path(tempfile.mkdtemp(prefix="opentime-bench-decisions-"))
    configs, paths, port = prepare(folder, args.recipients, args.warm)
    ratios: dict[str, list[float]] = {}
    for index in range(args.rounds):
        order = ["off", "on", "on+zone"] if index % 2 == 0 else ["on+zone", "on", "off"]
        runs = {"baseline": run_side("baseline", None, port, paths, args, folder)}
        for name in order:
            runs[name] = run_side(name, configs[name], port, paths, args, folder)
        log(f"round {index + 1}: " + ", ".join(f"{k} {v.rps:,.0f} req/s" for k, v in runs.items()))
        for top, bottom in (("on", "off"), ("on+zone", "off"), ("off", "baseline")):
            ratios.setdefault(f"{top}/{bottom} req/s", []).append(runs[top].rps / runs[bottom].rps)
            high, low = per_cpu(runs[top]), per_cpu(runs[bottom])
            if high is not None and low is not None:
                ratios.setdefault(f"{top}/{bottom} per CPU", []).append(high / low)
    for name, values in ratios.items():
        shown = " ".join(f"{v:.3f}" for v in values)
        print(f"{name:<22} median {statistics.median(values):.3f}  (rounds: {shown})")
    print(f"ratio={statistics.median(ratios['on/off req/s']):.3f}")
    shutil.rmtree(folder, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
