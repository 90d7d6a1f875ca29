"""Instructions per amp-list open, by path, counted by callgrind: deterministic where wall time is not.

    python3 -m bench.callgrind_open                       # PostgreSQL + Redis, 2,000 opens per path, ~3 min
    python3 -m bench.callgrind_open --opens 500           # quicker, a little noisier
    python3 -m bench.callgrind_open --sqlite              # the one-process default: SQLite, no Redis
    python3 -m bench.callgrind_open --no-valgrind --cprofile redis_hit   # where the Python time goes

From the repository root; needs ``valgrind`` (``apt-get install -y valgrind``) and, unless ``--sqlite``,
the PostgreSQL and Redis named by ``--pg-url`` / ``--redis-url`` (a database and a key prefix of the
run's own, dropped at the end, as ``bench.nodes`` does).

The app is driven in one process, through its ASGI callable (no HTTP server, no sockets to the
client): two apps built by ``create_app`` on the same store and Redis, "A" and "B", as two nodes.
``--concurrency`` opens run at once (16: about the lookups one MGET carried under ``bench.nodes``),
each worker starting its next open when its last one is answered. Phases, each over its own set of
recipients (``--opens`` each), each preceded by a warm-up set of the same kind:

- ``local_hit``: A opens a set twice (fills A's caches and Redis), then the measured third time;
- ``redis_hit``: A opens the set first (fills Redis), then B, whose caches are empty: local miss,
  Redis hit (checked: B reads no profile from the store);
- ``cold``: B opens a set nobody opened: local miss, Redis miss, store read, Redis fill (checked: one
  store read per open). With ``--sqlite`` there is no Redis: a store read per open.

The inner run (under ``valgrind --tool=callgrind``) marks each phase's start and end by calling
``os.getppid``, which nothing else on these paths calls, and callgrind dumps its counters on each call
(``--dump-before``); a phase's dump over its opens is the figure (the driver's own scope dicts and
send callable are in it too, the same on every revision). Counts move by well under 1% run to run.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import json
import os
import pstats
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import uvloop

from app.app import OpentimeApp, create_app
from app.asgi import Message, Send
from app.config import Settings, load_settings
from app.demo import DEMO_SENDER, recipient_id
from app.gc_policy import tune_for_serving
from app.security.keyring import new_keyring, save_keyring
from app.security.tokens import TokenSigner
from bench.amp_list import BLOCK, CAMPAIGN, BenchError, log
from bench.nodes import drop_prefix, fresh_database, load_profiles

PHASES = ("local_hit", "redis_hit", "cold")
# Sets of recipients, in the order they are used; "warm" ones only warm code paths up.
SETS = ("hit", "tier_warm", "tier", "cold_warm", "cold")
HEADERS = [(b"host", b"127.0.0.1"), (b"amp-email-sender", DEMO_SENDER.encode()), (b"accept", b"*/*")]


# --- the outer run: prepare, run the inner one under callgrind, read its dumps ----------------------


def main(argv: Sequence[str] | None = None) -> int:
    raw = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=raw)
    parser.add_argument("--opens", type=int, default=2000, help="opens per phase (and per warm-up set)")
    parser.add_argument("--concurrency", type=int, default=16, help="opens in flight at once")
    parser.add_argument("--pg-url", default="postgresql://127.0.0.1:5432/test")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--sqlite", action="store_true", help="SQLite store, no Redis (the default)")
    parser.add_argument("--no-valgrind", action="store_true", help="no callgrind (with --cprofile)")
    parser.add_argument("--cprofile", choices=PHASES, help="cProfile this phase (with --no-valgrind)")
    parser.add_argument("--keep", type=Path, help="copy the phases' callgrind dumps into this folder")
    parser.add_argument("--inner", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.inner:
        plan = json.loads(Path(args.inner).read_text())
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:  # as uvicorn runs the server
            runner.run(inner(plan, args.cprofile))
        return 0
    try:
        with tempfile.TemporaryDirectory(prefix="opentime-callgrind-") as tmp:
            figures = outer(Path(tmp), args)
    except BenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if figures:
        print(f"\n{'path':<12}{'instructions per open':>24}")
        for phase, count in figures.items():
            print(f"{phase:<12}{count:>24,.0f}")
    return 0


def outer(folder: Path, args: argparse.Namespace) -> dict[str, float]:
    total = args.opens * len(SETS)
    with store_for(folder, args, total) as (database_url, redis_url, prefix):
        plan = prepare(folder, args, database_url, redis_url, prefix)
        command = [sys.executable, "-m", "bench.callgrind_open", "--inner", str(plan)]
        if args.cprofile:
            command += ["--cprofile", args.cprofile]
        if args.no_valgrind:
            subprocess.run(command, check=True)
            return {}
        out = folder / "callgrind.out"
        valgrind = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}"]
        valgrind += ["--dump-before=os_getppid", "--dump-instr=no", "--trace-children=no"]
        log(f"running {len(SETS)} sets of {args.opens:,} opens under callgrind (a few minutes)")
        started = time.monotonic()
        run = subprocess.run([*valgrind, *command], capture_output=True, text=True)
        if run.returncode != 0:
            raise BenchError(f"the inner run failed:\n{run.stdout[-2000:]}{run.stderr[-4000:]}")
        log(f"  done in {time.monotonic() - started:.0f} s")
        phases = json.loads(plan.read_text())["phases"]
        if args.keep:
            keep(folder, phases, args.keep)
        return per_open(folder, phases, args.opens)


@contextlib.contextmanager
def store_for(folder: Path, args: argparse.Namespace, rows: int) -> Iterator[tuple[str, str, str]]:
    if args.sqlite:
        yield f"sqlite:///{folder / 'opentime.db'}", "", ""
        return
    prefix = f"otcg{secrets.token_hex(3)}:"
    with fresh_database(args.pg_url) as database_url:
        try:
            yield database_url, args.redis_url, prefix
        finally:
            drop_prefix(args.redis_url, prefix)


def prepare(folder: Path, args: argparse.Namespace, database_url: str, redis_url: str, prefix: str) -> Path:
    ring = new_keyring(datetime.now(UTC))
    keys_file = folder / "keys.json"
    save_keyring(ring, keys_file, overwrite=True)
    total = args.opens * len(SETS)
    log(f"loading {total:,} recipients")
    asyncio.run(load_profiles(database_url, total))
    signer, now = TokenSigner(ring), int(time.time())
    sets = {
        name: [
            f"/v1/{signer.sign(CAMPAIGN, recipient_id(1 + i * args.opens + j), now=now)}/list/{BLOCK}.json"
            for j in range(args.opens)
        ]
        for i, name in enumerate(SETS)
    }
    settings = {
        "templates_dir": str(patient_templates(folder)),
        "public_base_url": "http://127.0.0.1:8000",
        "keys_file": str(keys_file),
        "allowed_senders": DEMO_SENDER,
        "database_url": database_url,
        "image_render_processes": 1,
    }
    if redis_url:
        settings |= {"redis_url": redis_url, "redis_key_prefix": prefix}
    phases = [phase for phase in PHASES if redis_url or phase != "redis_hit"]
    plan = folder / "plan.json"
    content = {"settings": settings, "sets": sets, "phases": phases, "concurrency": args.concurrency}
    plan.write_text(json.dumps(content))
    return plan


def patient_templates(folder: Path) -> Path:
    """The shipped campaigns with a budget of 5 s on every block: under callgrind a program runs ~50
    times slower, and an open past its budget would take the fallback path instead of the one measured
    (only which of ``Deadlines``' queues a waiter joins depends on the budget)."""
    templates = folder / "amp_templates"
    shutil.copytree(Path(__file__).resolve().parent.parent / "amp_templates", templates)
    for blocks in templates.glob("*/blocks.toml"):
        blocks.write_text(re.sub(r"^budget_ms = \d+", "budget_ms = 5000", blocks.read_text(), flags=re.M))
    return templates


def _dumps(folder: Path) -> list[Path]:
    return sorted(folder.glob("callgrind.out.*"), key=lambda p: int(p.name.rsplit(".", 1)[1]))


def keep(folder: Path, phases: list[str], into: Path) -> None:
    """``callgrind_annotate --inclusive=yes <into>/callgrind.<phase>`` shows where a phase spends."""
    into.mkdir(parents=True, exist_ok=True)
    for phase, dump in zip(phases, _dumps(folder)[1::2], strict=False):
        shutil.copy(dump, into / f"callgrind.{phase}")


def per_open(folder: Path, phases: list[str], opens: int) -> dict[str, float]:
    """Each phase's instructions (its end dump: the counts since its start dump) per open."""
    dumps = _dumps(folder)
    # Dump 1 is at the first phase's start (everything before it), then end, start, end, ...
    ends = dumps[1::2]
    if len(dumps) != len(phases) * 2:
        raise BenchError(f"expected {len(phases) * 2} dumps, found {len(dumps)}")
    return {phase: _total(path) / opens for phase, path in zip(phases, ends, strict=False)}


def _total(dump: Path) -> int:
    match = re.search(r"^(?:summary|totals): (\d+)", dump.read_text(), re.MULTILINE)
    if match is None:
        raise BenchError(f"no totals in {dump}")
    return int(match.group(1))


# --- the inner run: two apps in one process ---------------------------------------------------------


async def inner(plan: dict[str, Any], profile: str | None) -> None:
    settings = load_settings({}, None, **plan["settings"]).settings
    sets: dict[str, list[str]] = plan["sets"]
    concurrency: int = plan["concurrency"]
    shared = "redis_url" in plan["settings"]
    async with started(settings) as (app_a, state_a), started(settings) as (app_b, state_b):
        if shared:
            await subscribed(state_a, state_b)
        tune_for_serving()
        opener_a, opener_b = Opener(app_a, state_a), Opener(app_b, state_b)
        for _ in range(2):
            await opener_a.run(sets["hit"], concurrency)
        hits = cache_hits(state_a)
        await measure("local_hit", opener_a.run(sets["hit"], concurrency), profile)
        if cache_hits(state_a) - hits != len(sets["hit"]):
            raise BenchError("A missed its cache during the local-hit phase")
        if shared:
            await opener_a.run(sets["tier_warm"] + sets["tier"], concurrency)
            await asyncio.sleep(0.5)  # A's last Redis fills land
            await opener_b.run(sets["tier_warm"], concurrency)
            reads = store_reads(state_b)
            await measure("redis_hit", opener_b.run(sets["tier"], concurrency), profile)
            if store_reads(state_b) - reads > len(sets["tier"]) // 100:
                raise BenchError("B read the store for Redis-tier opens: Redis was not filled")
        await opener_b.run(sets["cold_warm"], concurrency)
        reads = store_reads(state_b)
        await measure("cold", opener_b.run(sets["cold"], concurrency), profile)
        if store_reads(state_b) - reads < len(sets["cold"]):
            raise BenchError("B did not read the store for every cold open")
        await asyncio.sleep(0.2)  # the cold opens' Redis fills finish before the apps stop


async def measure(phase: str, run: Awaitable[None], profile: str | None) -> None:
    getppid = os.getppid  # callgrind dumps its counters on each call (--dump-before)
    profiler = cProfile.Profile() if profile == phase else None
    getppid()
    if profiler is not None:
        profiler.enable()
    await run
    if profiler is not None:
        profiler.disable()
    getppid()
    if profiler is not None:
        pstats.Stats(profiler).sort_stats("tottime").print_stats(40)


async def subscribed(*states: dict[str, Any]) -> None:
    """Wait until each app hears invalidations: its first subscription drops its caches."""
    deadline = time.monotonic() + 10
    while not all(state["services"].shared.invalidation.connected for state in states):
        if time.monotonic() > deadline:
            raise BenchError("an app did not subscribe to invalidations within 10 s")
        await asyncio.sleep(0.05)


def cache_hits(state: dict[str, Any]) -> int:
    return int(state["services"].lists.cache.stats.hits)


def store_reads(state: dict[str, Any]) -> int:
    return int(state["services"].store.profiles.read_stats.keys)


@contextlib.asynccontextmanager
async def started(settings: Settings) -> Any:
    """The app through its ASGI lifespan, as uvicorn runs it; yields it and its lifespan state."""
    app = create_app(settings)
    state: dict[str, Any] = {}
    inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    outbox: asyncio.Queue[Message] = asyncio.Queue()
    scope = {"type": "lifespan", "asgi": {"version": "3.0"}, "state": state}
    task = asyncio.ensure_future(app(scope, inbox.get, outbox.put))
    await inbox.put({"type": "lifespan.startup"})
    message = await outbox.get()
    if message["type"] != "lifespan.startup.complete":
        raise BenchError(f"the app did not start: {message}")
    try:
        yield app, state
    finally:
        await inbox.put({"type": "lifespan.shutdown"})
        await outbox.get()
        await task


class Opener:
    """Opens paths through one app's ASGI callable, checking each answer is the recipient's list."""

    def __init__(self, app: OpentimeApp, state: dict[str, Any]) -> None:
        self._app = app
        self._state = state

    async def run(self, paths: list[str], concurrency: int) -> None:
        queue = iter(paths)
        await asyncio.gather(*(self._worker(queue) for _ in range(concurrency)))

    async def _worker(self, queue: Iterator[str]) -> None:
        for path in queue:
            await self.open(path)

    async def open(self, path: str) -> None:
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "GET",
            "scheme": "http",
            "path": path,
            "raw_path": path.encode(),
            "query_string": b"",
            "headers": HEADERS,
            "client": ("127.0.0.1", 50000),
            "server": ("127.0.0.1", 8000),
            "state": self._state.copy(),  # as uvicorn does per request
        }
        got: list[Message] = []
        await self._app(scope, _receive, _collector(got))
        status, headers = got[0]["status"], dict(got[0]["headers"])
        if status != 200 or b"x-opentime-fallback" in headers or b'"items"' not in got[1]["body"]:
            raise BenchError(f"not the recipient's list: {status} {headers} {got[1:]}")


async def _receive() -> dict[str, Any]:
    return {"type": "http.request", "body": b"", "more_body": False}


def _collector(got: list[Message]) -> Send:
    async def send(message: Message) -> None:
        got.append(message)

    return send


if __name__ == "__main__":
    sys.exit(main())
