"""The work behind the open-time budget is bounded, against a real ``opentime serve`` (issue 13, finding 4).

Before: pending store reads, queued renders and hung upstream fetches had no cap (1,057 upstream
fetches at once in one test), and queued work went on after every open waiting for it had its
fallback. Each test drives one queue past its bound with a real slow dependency (PostgreSQL behind a
paused TCP proxy, renders bigger than the machine draws in the burst, an upstream that never answers)
and checks what a mail client sees (200, the fallback and its reason, within the budget) and what
``/metrics`` says (depth within the bound, what was shed, what was read or fetched).
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.config import Settings
from app.demo import demo_rows, recipient_id
from app.security.tokens import TokenSigner
from tests.conftest import SENDER, load_rows
from tests.metrics_tools import sample
from tests.pg import HOST, PORT, fresh_pg_url
from tests.servers import free_port, running, server_config
from tests.tcp_proxy import TcpProxy
from tests.upstream_stub import running_stub

pytestmark = pytest.mark.server
LIST_BUDGET_S, BANNER_BUDGET_S = 0.150, 0.300  # the demo's hello list and banner budgets
SLACK_S = 0.25  # a loaded 2-core machine; a queue wait would be seconds, not this
OVERLOADED = "overloaded"
QUEUE_FULL = "render-queue-full"


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    reason: str | None  # X-Opentime-Fallback; None: the recipient's own content
    took: float


class Served:
    def __init__(self, base: str) -> None:
        self.base = base

    def metrics(self) -> str:
        return httpx.get(f"{self.base}/metrics", timeout=5).text

    def work(self, queue: str) -> dict[str, float]:
        text = self.metrics()
        return {
            "depth": sample(text, "opentime_work_depth", queue=queue),
            "limit": sample(text, "opentime_work_limit", queue=queue),
            "full": sample(text, "opentime_work_shed_total", queue=queue, reason="full"),
        }

    def burst(self, paths: list[str], queue: str, *, lead: bool = False) -> tuple[list[Answer], list[float]]:
        """Every path at once, each on its own kept-alive connection (httpx's pool costs seconds at
        this many connections); and the queue's depth sampled meanwhile. ``lead``: the first path
        50 ms before the others (its work starts alone; theirs queues behind it)."""
        return asyncio.run(self._burst(paths, queue, lead))

    async def _burst(self, paths: list[str], queue: str, lead: bool) -> tuple[list[Answer], list[float]]:
        port = int(self.base.rsplit(":", 1)[1])
        connections = [await Connection.open(port) for _ in paths]
        watcher = await Connection.open(port)
        depths: list[float] = []
        done = asyncio.Event()

        async def watch() -> None:
            while not done.is_set():
                _, _, body = await watcher.get("/metrics")
                depths.append(sample(body.decode(), "opentime_work_depth", queue=queue))
                await asyncio.sleep(0.01)

        async def one(connection: Connection, path: str) -> Answer:
            if lead and path != paths[0]:
                await asyncio.sleep(0.05)
            start = time.monotonic()
            status, headers, _ = await connection.get(path)
            return Answer(status, headers.get("x-opentime-fallback"), time.monotonic() - start)

        watching = asyncio.create_task(watch())
        try:
            answers = await asyncio.gather(*(one(c, p) for c, p in zip(connections, paths, strict=True)))
        finally:
            done.set()
            await watching
            for connection in [*connections, watcher]:
                connection.close()
        return list(answers), depths


class Connection:
    """A minimal keep-alive HTTP/1.1 GET client."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, port: int) -> Connection:
        return cls(*await asyncio.open_connection("127.0.0.1", port))

    async def get(self, path: str) -> tuple[int, dict[str, str], bytes]:
        request = f"GET {path} HTTP/1.1\r\nhost: 127.0.0.1\r\namp-email-sender: {SENDER}\r\n\r\n"
        self.writer.write(request.encode())
        status_line = await self.reader.readline()
        headers: dict[str, str] = {}
        while (line := await self.reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode().partition(":")
            headers[name.strip().lower()] = value.strip()
        body = await self.reader.readexactly(int(headers.get("content-length", "0")))
        return int(status_line.split()[1]), headers, body

    def close(self) -> None:
        self.writer.close()


@contextmanager
def serving(settings: Settings, tmp_path: Path, **changes: Any) -> Iterator[Served]:
    port = free_port()
    config = server_config(settings, port, tmp_path / "opentime.toml", **changes)
    with running(["serve", "--config", str(config)], port, tmp_path / "server.log"):
        yield Served(f"http://127.0.0.1:{port}")


def list_path(signer: TokenSigner, recipient: str) -> str:
    return f"/v1/{signer.sign('demo', recipient, now=int(time.time()))}/list/hello.json"


def reasons(answers: list[Answer]) -> Counter[str | None]:
    return Counter(answer.reason for answer in answers)


def test_store_reads_past_the_bound_are_not_queued_and_abandoned_ones_not_read(
    settings: Settings, signer: TokenSigner, tmp_path: Path
) -> None:
    bound, opens = 8, 60
    with TcpProxy(HOST, PORT) as proxy, fresh_pg_url(port=proxy.port) as url:
        load_rows(url, list(demo_rows(opens + 1)))
        changes = {"database_url": url, "database_timeout_ms": 4000, "max_pending_store_reads": bound}
        with serving(settings, tmp_path, **changes) as server:
            warm = httpx.get(
                server.base + list_path(signer, recipient_id(opens + 1)), headers={"AMP-Email-Sender": SENDER}
            )
            assert warm.status_code == 200 and "x-opentime-fallback" not in warm.headers
            proxy.pause()  # PostgreSQL hangs: the read in flight waits, new reads queue behind it
            paths = [list_path(signer, recipient_id(i)) for i in range(1, opens + 1)]
            answers, depths = server.burst(paths, "store_reads", lead=True)
            assert all(a.status == 200 for a in answers)
            assert all(a.took < LIST_BUDGET_S + SLACK_S for a in answers), max(a.took for a in answers)
            # Before: all 60 queued (and would have been read after the outage, for nobody).
            assert reasons(answers) == {"budget-exceeded": bound, OVERLOADED: opens - bound}
            assert max(depths) == bound
            during = server.work("store_reads")
            assert during == {"depth": bound, "limit": bound, "full": opens - bound}
            text = server.metrics()
            read_keys = sample(text, "opentime_store_read_keys_total")
            assert (
                sample(text, "opentime_open_responses_total", kind="list", outcome=OVERLOADED)
                == opens - bound
            )

            proxy.resume()  # the read in flight finishes; every queued one's opens have gone
            time.sleep(1.0)
            text = server.metrics()
            assert read_keys == 2  # the warm-up's read, and the lead open's, in flight when paused
            abandoned = sample(text, "opentime_work_shed_total", queue="store_reads", reason="abandoned")
            assert abandoned == bound - 1
            assert sample(text, "opentime_store_read_keys_total") == read_keys  # nothing read for nobody
            assert sample(text, "opentime_work_depth", queue="store_reads") == 0

            # The read that had started kept its promise (its answer fills the cache for the next
            # open); the dropped ones are read at their next open, and everybody is personal again.
            admitted = [p for p, a in zip(paths, answers, strict=True) if a.reason != OVERLOADED]
            again, _ = server.burst(admitted, "store_reads")
            assert all(a.status == 200 and a.reason is None for a in again)
            assert sample(server.metrics(), "opentime_store_read_keys_total") == read_keys + abandoned


def test_renders_past_the_pool_bound_are_answered_at_once_and_rendered_later(
    settings: Settings, signer: TokenSigner, tmp_path: Path
) -> None:
    # Image renders are bounded by the render pool's admission (app/content/render_pool.py): one
    # process, 4 renders in flight or queued; the rest are answered at once and wait in the backlog.
    bound, opens = 4, 40
    load_rows(settings.database_url, list(demo_rows(opens)))
    with serving(settings, tmp_path, image_render_processes=1, image_render_queue=bound) as server:
        now = int(time.time())
        # @2x PNG banners, a distinct recipient each: far slower to render than they arrive.
        paths = [
            f"/v1/{signer.sign('demo', recipient_id(i), now=now)}/img/banner@2x.png"
            for i in range(1, opens + 1)
        ]
        answers, depths = server.burst(paths, "renders")
        assert all(a.status == 200 for a in answers)
        assert all(a.took < BANNER_BUDGET_S + SLACK_S for a in answers), max(a.took for a in answers)
        refused = reasons(answers)[QUEUE_FULL]
        assert refused > 0 and set(reasons(answers)) <= {None, "budget-exceeded", QUEUE_FULL}
        assert max(depths) <= bound
        deadline = time.monotonic() + 20
        while sample(server.metrics(), "opentime_image_renders_total") < opens:
            assert time.monotonic() < deadline, "the backlog did not drain"
            time.sleep(0.2)
        text = server.metrics()
        shed = sum(
            sample(text, "opentime_work_shed_total", queue="renders", reason=why)
            for why in ("queue-full", "too-late")
        )
        assert shed == refused  # each refused render counted once, and rendered later from the backlog
        assert sample(text, "opentime_work_limit", queue="renders") == bound
        assert sample(text, "opentime_work_depth", queue="renders") == 0


def test_hung_upstream_fetches_are_capped(settings: Settings, signer: TokenSigner, tmp_path: Path) -> None:
    # The 1,057 hung fetches at once, at a smaller scale: 120 opens of recipients the store
    # does not know, while the upstream accepts and never answers.
    bound, opens = 10, 120
    with running_stub() as stub:
        stub.mode = "hang"
        changes = {
            "upstream_url": f"{stub.url}/profiles/{{recipient}}",
            "upstream_total_timeout_seconds": 3.0,
            "upstream_read_timeout_seconds": 3.0,
            "upstream_max_fetches": bound,
        }
        with serving(settings, tmp_path, **changes) as server:
            paths = [list_path(signer, f"nobody-{i}") for i in range(opens)]
            answers, depths = server.burst(paths, "upstream_fetches")
            assert all(a.status == 200 for a in answers)
            assert all(a.took < LIST_BUDGET_S + SLACK_S for a in answers), max(a.took for a in answers)
            assert reasons(answers) == {"budget-exceeded": bound, OVERLOADED: opens - bound}
            assert max(depths) == bound
            assert server.work("upstream_fetches") == {"depth": bound, "limit": bound, "full": opens - bound}
            assert stub.total_requests == bound  # before: 100 sent (the connection pool), 20 more waiting
