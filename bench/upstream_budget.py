"""Open-time latency while the upstream profile API hangs, against a real ``opentime serve`` and stub.

    python3 -m bench.upstream_budget            # ~15 s
    python3 -m bench.upstream_budget --quick    # smoke check, ~5 s

Like ``bench/amp_list.py`` the server (all its threads) is pinned to ``--server-cpu`` and this process
(load generator and stub) to ``--load-cpu``, so neither steals the other's CPU and a stall is the
server's own; ``--no-pin`` turns that off (one-CPU machines).

A local stub (``tests/upstream_stub.py``) is the upstream; after a 1 s warm-up (the upstream
answers) it is switched to ``hang`` (accepts, never answers). ``--clients`` keep-alive clients each
request the ``hello`` amp-list (150 ms budget) for recipients the store does not know, a new one per
request, so every request misses the cache and the store and waits on the upstream. Every answer must
be a 200, and p99 must stay within the block's budget + 20 ms, both over all requests and over those
that waited on the upstream (before the breaker opened). The breaker opens after its failure threshold
(upstream timeouts), after which the fallback is immediate: the table splits the reasons.

Prints a table and writes ``bench/results/upstream_budget.json``; exits 1 when the target is missed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
import tempfile
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from app.demo import DEMO_SENDER, demo_rows
from app.security.keyring import new_keyring, save_keyring
from app.security.tokens import TokenSigner
from app.store import open_store
from tests.servers import free_port, running
from tests.upstream_stub import running_stub

RESULTS = Path(__file__).resolve().parent / "results" / "upstream_budget.json"
BUDGET_MS, SLACK_MS = 150.0, 20.0  # the demo "hello" block's budget_ms, and the allowed overshoot
IMMEDIATE = "circuit-open"  # the one reason that did not wait on the upstream


class Connection:
    """A minimal keep-alive HTTP/1.1 GET client (httpx's pool would measure itself)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, port: int) -> Connection:
        return cls(*await asyncio.open_connection("127.0.0.1", port))

    async def get(self, path: str) -> tuple[int, dict[str, str]]:
        request = f"GET {path} HTTP/1.1\r\nhost: 127.0.0.1\r\namp-email-sender: {DEMO_SENDER}\r\n\r\n"
        self.writer.write(request.encode())
        status_line = await self.reader.readline()
        headers: dict[str, str] = {}
        while (line := await self.reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode().partition(":")
            headers[name.strip().lower()] = value.strip()
        await self.reader.readexactly(int(headers.get("content-length", "0")))
        return int(status_line.split()[1]), headers

    def close(self) -> None:
        self.writer.close()


async def client_loop(port: int, signer: TokenSigner, worker: int, until: float, out: list[Any]) -> None:
    connection = await Connection.open(port)
    n = 0
    try:
        while time.monotonic() < until:
            token = signer.sign("demo", f"upstream-only-{worker}-{n}-{until}", now=int(time.time()))
            n += 1
            start = time.perf_counter()
            status, headers = await connection.get(f"/v1/{token}/list/hello.json")
            out.append(
                ((time.perf_counter() - start) * 1000, status, headers.get("x-opentime-fallback", "-"))
            )
    finally:
        connection.close()


async def load(port: int, signer: TokenSigner, clients: int, duration: float) -> list[Any]:
    out: list[Any] = []
    until = time.monotonic() + duration
    await asyncio.gather(*(client_loop(port, signer, i, until, out) for i in range(clients)))
    return out


def prepare(folder: Path, port: int, upstream: str) -> tuple[Path, TokenSigner]:
    ring = new_keyring(datetime.now(UTC))
    save_keyring(ring, folder / "keys.json", overwrite=False)
    database_url = f"sqlite:///{folder / 'bench.db'}"

    async def fill() -> None:
        store = open_store(database_url)
        await store.open()
        try:
            await store.profiles.upsert_many(list(demo_rows(100)))
        finally:
            await store.close()

    asyncio.run(fill())
    config = folder / "opentime.toml"
    config.write_text(
        f'public_base_url = "http://127.0.0.1:{port}"\nkeys_file = "{folder / "keys.json"}"\n'
        f'database_url = "{database_url}"\nallowed_senders = ["{DEMO_SENDER}"]\nport = {port}\n'
        f'upstream_url = "{upstream}/profiles/{{recipient}}"\nupstream_total_timeout_seconds = 1.0\n'
        f"upstream_read_timeout_seconds = 0.5\nupstream_retries = 1\n"
    )
    return config, TokenSigner(ring)


def percentiles(latencies: list[float]) -> dict[str, Any]:
    latencies = sorted(latencies)

    def pick(q: float) -> float:
        return latencies[min(len(latencies) - 1, int(len(latencies) * q))]

    return {"requests": len(latencies), "p50_ms": pick(0.50), "p99_ms": pick(0.99), "max_ms": latencies[-1]}


def pin(pid: int, cpu: int) -> None:
    """Pin every thread of ``pid`` (``taskset -a``): threads started later inherit it."""
    for task in Path(f"/proc/{pid}/task").iterdir():
        os.sched_setaffinity(int(task.name), {cpu})


def summarize(samples: list[Any]) -> dict[str, Any]:
    reasons = Counter(s[2] for s in samples)
    waited = [s[0] for s in samples if s[2] != IMMEDIATE]
    return {
        **percentiles([s[0] for s in samples]),
        "waited_on_upstream": percentiles(waited) if waited else None,
        "non_200": sum(1 for s in samples if s[1] != 200),
        "slowest_ms": sorted((round(s[0], 1) for s in samples), reverse=True)[:10],
        "by_reason": {r: percentiles([s[0] for s in samples if s[2] == r]) for r in sorted(reasons)},
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--server-cpu", type=int, default=0)
    parser.add_argument("--load-cpu", type=int, default=1)
    parser.add_argument("--no-pin", action="store_true")
    args = parser.parse_args()
    if args.quick:
        args.duration = 3.0
    if not args.no_pin:
        pin(os.getpid(), args.load_cpu)  # before the stub's thread starts
    with running_stub() as stub, tempfile.TemporaryDirectory(prefix="opentime-bench-upstream-") as tmp:
        port = free_port()
        config, signer = prepare(Path(tmp), port, stub.url)
        with running(["serve", "--config", str(config)], port, Path(tmp) / "server.log") as server:
            if not args.no_pin:
                pin(server.pid, args.server_cpu)
            asyncio.run(load(port, signer, args.clients, 1.0))  # warm-up, upstream answering 404s
            stub.mode = "hang"
            result = summarize(asyncio.run(load(port, signer, args.clients, args.duration)))
        result["upstream_requests"] = stub.total_requests
        logging.getLogger("asyncio").setLevel(logging.CRITICAL)  # the stub's hanging handlers, cancelled
    report(result, args)


def report(result: dict[str, Any], args: argparse.Namespace) -> None:
    target = BUDGET_MS + SLACK_MS
    waited = result["waited_on_upstream"]
    result["target_p99_ms"] = target
    result["pinned"] = None if args.no_pin else {"server": args.server_cpu, "load": args.load_cpu}
    within = result["p99_ms"] <= target and (waited is None or waited["p99_ms"] <= target)
    result["ok"] = result["non_200"] == 0 and within
    pinned = "unpinned" if args.no_pin else f"server on CPU {args.server_cpu}, load on CPU {args.load_cpu}"
    print(f"upstream hanging: {args.clients} clients, {args.duration:.0f} s, block budget {BUDGET_MS:.0f} ms")
    upstream = result["upstream_requests"]
    print(f"requests {result['requests']:,}, non-200 {result['non_200']}, upstream GETs {upstream}, {pinned}")
    print(f"{'responses':<24}{'count':>8}{'p50 ms':>9}{'p99 ms':>9}{'max ms':>9}")
    rows = [("all", result), *([("waited on upstream", waited)] if waited else [])]
    for name, part in [*rows, *result["by_reason"].items()]:
        row = f"{part['p50_ms']:>9.1f}{part['p99_ms']:>9.1f}{part['max_ms']:>9.1f}"
        print(f"{name:<24}{part['requests']:>8,}{row}")
    print(f"target p99 <= {target:.0f} ms (all and waited), all 200: {'met' if result['ok'] else 'MISSED'}")
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    sys.exit(0 if result["ok"] else 1)


if __name__ == "__main__":
    main()
