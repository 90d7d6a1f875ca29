"""Benchmark signed webhook events against a real ``opentime serve`` (SQLite, synchronous=FULL).

    python3 -m bench.events                 # ~40 s
    python3 -m bench.events --quick         # smoke check, ~10 s

Phases, each against the same server process (loopback, one worker):

1. batches of 1: ``--posters`` concurrent clients (default 64) each post one event per request for
   ``--duration`` seconds; every 200 is a committed (durable) event. Group commit merges concurrent
   requests into shared transactions.
2. batches of 100: ``--batch-posters`` clients (default 4) post 100 events per request.
3. event-to-visible: for ``--samples`` recipients, prime the cached amp-list (picks.json), POST a
   ``profile.updated`` that changes it, then GET the amp-list in a loop until it shows the change;
   latency from the POST being sent to the first response showing it (p50/p99).

Prints a table and writes ``bench/results/events.json``. The load generator runs on the same machine,
so the rates are a lower bound of what the server sustains.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import orjson

from app.demo import DEMO_SENDER, demo_rows, recipient_id
from app.security.keyring import new_keyring, save_keyring
from app.security.tokens import TokenSigner
from app.security.webhook_auth import sign_header
from app.store import open_store
from tests.servers import free_port, running

RESULTS = Path(__file__).resolve().parent / "results" / "events.json"
SECRET = "whsec-bench-0123456789abcdef"  # noqa: S105 - a throwaway server's secret
RECIPIENTS = 10_000
_ids = itertools.count()


def now_rfc3339() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def make_event(kind: str = "product.viewed", **payload: Any) -> dict[str, Any]:
    n = next(_ids)
    return {
        "id": f"bench-{n}",
        "type": kind,
        "recipient": recipient_id(1 + n % RECIPIENTS),
        "occurred_at": now_rfc3339(),
        "payload": payload or {"sku": f"sku-{n % 50}", "name": "Camp mug"},
    }


def signed(body: bytes) -> dict[str, str]:
    return {
        "content-type": "application/json",
        "opentime-signature": sign_header([SECRET], int(time.time()), body),
    }


class Connection:
    """A minimal keep-alive HTTP/1.1 client: httpx's pool itself tops out near 200 req/s at 64
    connections on one core, which would measure the client instead of the server."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, port: int) -> Connection:
        return cls(*await asyncio.open_connection("127.0.0.1", port))

    async def post(self, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, bytes]:
        head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        request = f"POST {path} HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-length: {len(body)}\r\n{head}\r\n"
        self.writer.write(request.encode() + body)
        status_line = await self.reader.readline()
        length = 0
        while (line := await self.reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode().partition(":")
            if name.lower() == "content-length":
                length = int(value)
        return int(status_line.split()[1]), await self.reader.readexactly(length)

    def close(self) -> None:
        self.writer.close()


async def post_loop(port: int, batch: int, until: float, counts: list[int]) -> None:
    connection = await Connection.open(port)
    try:
        while time.monotonic() < until:
            events = [make_event() for _ in range(batch)]
            body = orjson.dumps(events[0] if batch == 1 else events)
            status, answer = await connection.post("/webhooks/events", body, signed(body))
            if status != 200:
                raise RuntimeError(f"{status}: {answer[:200]!r}")
            counts[0] += batch
            counts[1] += 1
    finally:
        connection.close()


async def throughput(port: int, batch: int, posters: int, duration: float) -> dict[str, float]:
    counts = [0, 0]
    start = time.monotonic()
    await asyncio.gather(*(post_loop(port, batch, start + duration, counts) for _ in range(posters)))
    elapsed = time.monotonic() - start
    return {"events_per_s": counts[0] / elapsed, "requests_per_s": counts[1] / elapsed, "events": counts[0]}


Send = Callable[[httpx.AsyncClient, bytes], Awaitable[None]]


async def post_webhook(client: httpx.AsyncClient, body: bytes) -> None:
    """Deliver one event by signed webhook; returns once it is committed (the 200)."""
    response = await client.post("/webhooks/events", content=body, headers=signed(body))
    if response.status_code != 200:
        raise RuntimeError(f"{response.status_code}: {response.text[:200]}")


async def visible(
    base: str, signer: TokenSigner, samples: int, send: Send = post_webhook
) -> dict[str, float]:
    """Event-to-visible latencies; ``send`` delivers the event (by webhook unless told otherwise)."""
    latencies: list[float] = []
    amp = {"AMP-Email-Sender": DEMO_SENDER}
    async with httpx.AsyncClient(base_url=base, timeout=10) as client:
        for i in range(samples):
            recipient = recipient_id(RECIPIENTS - i)
            url = f"{base}/v1/{signer.sign('demo', recipient, now=int(time.time()))}/list/picks.json"
            assert (await client.get(url, headers=amp)).status_code == 200  # cached now
            marker = f"fresh-{i}-{time.monotonic_ns()}"
            item = {"name": marker, "price": 1, "sku": "sku-x", "image": "x.jpg"}
            event = {**make_event("profile.updated", recommendations=[item]), "recipient": recipient}
            body = orjson.dumps(event)
            start = time.perf_counter()
            await send(client, body)
            while marker not in (await client.get(url, headers=amp)).text:
                pass
            latencies.append((time.perf_counter() - start) * 1000)
    return latency_summary(latencies)


def latency_summary(latencies_ms: list[float]) -> dict[str, float]:
    """p50, p99 and max of event -> visible latencies (milliseconds), and how many there were."""
    ordered = sorted(latencies_ms)
    return {
        "p50_ms": statistics.median(ordered),
        "p99_ms": ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))],
        "max_ms": ordered[-1],
        "samples": len(ordered),
    }


def prepare(
    folder: Path, port: int, database_url: str | None = None, extra: str = ""
) -> tuple[Path, TokenSigner]:
    """Key ring, ``RECIPIENTS`` demo profiles in the store (a SQLite file in ``folder`` unless
    ``database_url`` names one) and the server's config, with ``extra`` TOML lines at its end."""
    ring = new_keyring(datetime.now(UTC))
    save_keyring(ring, folder / "keys.json", overwrite=False)
    database_url = database_url or f"sqlite:///{folder / 'bench.db'}"

    async def load() -> None:
        store = open_store(database_url)
        await store.open()
        try:
            await store.profiles.upsert_many(list(demo_rows(RECIPIENTS)))
        finally:
            await store.close()

    asyncio.run(load())
    config = folder / "opentime.toml"
    config.write_text(
        f'public_base_url = "http://127.0.0.1:{port}"\nkeys_file = "{folder / "keys.json"}"\n'
        f'database_url = "{database_url}"\nallowed_senders = ["{DEMO_SENDER}"]\n'
        f'webhook_secrets = ["{SECRET}"]\nport = {port}\n{extra}'
    )
    return config, TokenSigner(ring)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--posters", type=int, default=64)
    parser.add_argument("--batch-posters", type=int, default=4)
    parser.add_argument("--samples", type=int, default=300)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    if args.quick:
        args.duration, args.samples = 2.0, 50
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="opentime-bench-events-") as tmp:
        port = free_port()
        config, signer = prepare(Path(tmp), port)
        base = f"http://127.0.0.1:{port}"
        with running(["serve", "--config", str(config)], port, Path(tmp) / "server.log"):
            asyncio.run(throughput(port, 1, 4, 1.0))  # warm-up
            results["batch_1"] = asyncio.run(throughput(port, 1, args.posters, args.duration))
            results["batch_100"] = asyncio.run(throughput(port, 100, args.batch_posters, args.duration))
            results["visible"] = asyncio.run(visible(base, signer, args.samples))
    print(f"{'phase':<28}{'events/s':>12}{'requests/s':>12}")
    for name, label in (
        ("batch_1", f"batches of 1 ({args.posters} posters)"),
        ("batch_100", "batches of 100"),
    ):
        r = results[name]
        print(f"{label:<28}{r['events_per_s']:>12,.0f}{r['requests_per_s']:>12,.0f}")
    v = results["visible"]
    print(f"event-to-visible: p50 {v['p50_ms']:.2f} ms, p99 {v['p99_ms']:.2f} ms, max {v['max_ms']:.2f} ms")
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
