"""``opentime serve --workers 2``: one /metrics for all workers, and the rule that it needs Redis."""

from __future__ import annotations

import os
import re
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from app.config import Settings
from app.demo import recipient_id
from app.security.tokens import TokenSigner
from app.worker_metrics import Snapshot, decode
from tests.conftest import SENDER
from tests.servers import free_port, running
from tests.test_server import cli, write_config

pytestmark = pytest.mark.server

REFUSAL = (
    "workers = 2 needs redis_url: the webhook replay guard and cache invalidation must be shared"
    " between worker processes; set redis_url or run workers = 1"
)


def two_workers_config(settings: Settings, port: int, path: Path, redis: tuple[str, str] | None) -> Path:
    """``redis``: (url, key prefix) of the shared tier, or None for none."""
    write_config(settings, port, path)
    with path.open("a") as config:
        config.write("workers = 2\n")
        if redis is not None:
            config.write(f'redis_url = "{redis[0]}"\nredis_key_prefix = "{redis[1]}"\n')
    return path


def snapshots(folder: Path) -> list[Snapshot]:
    return [decode(path.read_bytes()) for path in sorted(folder.glob("worker-*.json"))]


def opens_of(snapshot: Snapshot) -> float:
    family = next(f for f in snapshot.families if f.name == "opentime_open_responses")
    return sum(family.samples.values())


def published_opens(folder: Path, expected: int, within: float = 3.0) -> list[float]:
    """Each worker's opens in its snapshot, once they add up to ``expected`` (or ``within`` s passed)."""
    deadline = time.monotonic() + within
    served = [opens_of(s) for s in snapshots(folder)]
    while sum(served) != expected and time.monotonic() < deadline:
        time.sleep(0.1)
        served = [opens_of(s) for s in snapshots(folder)]
    return served


def scraped_opens(base: str) -> float:
    text = httpx.get(f"{base}/metrics").text  # a new connection: any worker may answer
    return sum(float(v) for v in re.findall(r"^opentime_open_responses_total\{[^}]*\} (\S+)$", text, re.M))


def every_scrape_reports(base: str, expected: float, *, within: float = 5.0, scrapes: int = 8) -> None:
    deadline = time.monotonic() + within
    seen: list[float] = []
    while time.monotonic() < deadline:
        seen = [scraped_opens(base) for _ in range(scrapes)]
        if all(count == expected for count in seen):
            return
        time.sleep(0.2)
    raise AssertionError(f"/metrics reported {seen}, expected {expected} from every scrape")


def test_metrics_add_up_every_worker_even_a_replaced_one(
    settings: Settings, signer: TokenSigner, shared_redis: tuple[str, str], tmp_path: Path
) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    config = two_workers_config(settings, port, tmp_path / "opentime.toml", shared_redis)
    temp = tmp_path / "tmp"
    temp.mkdir()
    token = signer.sign("demo", recipient_id(2), now=int(time.time()))
    url = f"{base}/v1/{token}/list/picks.json"

    def open_once(_: int) -> int:
        return httpx.get(url, headers={"AMP-Email-Sender": SENDER}).status_code  # a new connection each

    with running(
        ["serve", "--config", str(config)], port, tmp_path / "server.log", env={"TMPDIR": str(temp)}
    ):
        (folder,) = temp.glob("opentime-metrics-*")
        sent = 0
        with ThreadPoolExecutor(8) as pool:
            for _ in range(20):  # concurrent opens until both workers have served some
                assert set(pool.map(open_once, range(16))) == {200}
                sent += 16
                time.sleep(1.3)  # a snapshot a second
                if len(snapshots(folder)) == 2 and all(opens_of(s) > 0 for s in snapshots(folder)):
                    break
        served = published_opens(folder, sent)
        assert len(served) == 2 and min(served) > 0, f"one worker served every open: {served}"
        assert sum(served) == sent
        every_scrape_reports(base, sent)

        # A worker killed outright: uvicorn starts another; its last snapshot still counts.
        victim = snapshots(folder)[0].worker
        os.kill(victim, signal.SIGKILL)
        deadline = time.monotonic() + 20
        while len(snapshots(folder)) < 3 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert len(snapshots(folder)) == 3, "no replacement worker published a snapshot"
        every_scrape_reports(base, sent)
        assert open_once(0) == 200
        every_scrape_reports(base, sent + 1)
    assert not folder.exists()  # the run's folder goes with the server


def test_serve_refuses_several_workers_without_redis(settings: Settings, tmp_path: Path) -> None:
    config = two_workers_config(settings, free_port(), tmp_path / "opentime.toml", None)
    for command in ("serve", "check-config"):
        result = cli(command, "--config", str(config))
        assert result.returncode == 2, command
        assert f"error: {REFUSAL}" in result.stderr, command
