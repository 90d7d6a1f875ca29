"""A real ``opentime serve``: banners render in its render processes (their CPU time grows, the
server's answers are personal), one or two workers, and neither SIGTERM nor SIGKILL leaves a render
process behind."""

from __future__ import annotations

import os
import re
import signal
import time
from pathlib import Path

import httpx
import pytest

from app.config import Settings
from app.demo import recipient_id
from app.security.tokens import TokenSigner
from tests.conftest import DEMO_COUNT
from tests.servers import free_port, running
from tests.test_images_helpers import decode
from tests.test_server import write_config
from tests.test_workers_server import two_workers_config

pytestmark = pytest.mark.server
TICKS = 100  # clock ticks a second (os.sysconf("SC_CLK_TCK") on Linux)


def _stat(pid: int) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text[text.rindex(")") + 2 :].split()  # after "pid (name) ": state, ppid, ...


def descendants(root: int) -> set[int]:
    """Every living process under ``root`` (render workers are children of the fork server)."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            fields = _stat(int(entry.name))
            if fields is not None and fields[0] != "Z":
                parents[int(entry.name)] = int(fields[1])
    found, frontier = set(), {root}
    while frontier:
        frontier = {pid for pid, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def render_processes(root: int) -> set[int]:
    """The fork servers under ``root`` and the render workers they forked (same command line)."""
    found = set()
    for pid in descendants(root):
        try:
            command = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if b"multiprocessing.forkserver" in command:
            found.add(pid)
    return found


def cpu_seconds(pids: set[int]) -> float:
    total = 0
    for pid in pids:
        fields = _stat(pid)
        if fields is not None:
            total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / TICKS


def alive(pids: set[int]) -> set[int]:
    return {pid for pid in pids if (fields := _stat(pid)) is not None and fields[0] != "Z"}


def banner_urls(base: str, signer: TokenSigner) -> list[str]:
    now = int(time.time())
    tokens = [signer.sign("demo", recipient_id(i), now=now) for i in range(1, DEMO_COUNT + 1)]
    names = ("banner.png", "banner@2x.png", "banner.jpg", "banner@2x.jpg")
    return [f"{base}/v1/{token}/img/{name}" for token in tokens for name in names]


def metric(base: str, name: str) -> float:
    text = httpx.get(f"{base}/metrics").text
    return sum(float(v) for v in re.findall(rf"^{name}(?:{{[^}}]*}})? (\S+)$", text, re.M))


def render_and_stop(config: Path, port: int, log: Path, signer: TokenSigner, processes: int) -> None:
    """``processes``: render processes in all the server's workers together."""
    base = f"http://127.0.0.1:{port}"
    with running(["serve", "--config", str(config)], port, log) as server:
        # The render processes and (per server worker) their fork server. Ready means one worker
        # answered: with two, the other may still be starting its pool on a busy machine.
        deadline = time.monotonic() + 20
        workers = render_processes(server.pid)
        while len(workers) <= processes and time.monotonic() < deadline:
            time.sleep(0.1)
            workers = render_processes(server.pid)
        assert len(workers) > processes
        everything = descendants(server.pid)
        before = cpu_seconds(workers)
        for url in banner_urls(base, signer):
            response = httpx.get(url, timeout=10)
            assert response.status_code == 200
            assert "x-opentime-fallback" not in response.headers, response.headers
        assert decode(response.content).size == (1200, 400)
        assert metric(base, "opentime_image_render_processes") == processes
        assert metric(base, "opentime_image_renders_total") >= DEMO_COUNT  # snapshots lag up to 1 s
        # 80 banners drawn (~1 s of CPU): in the render processes, not in the server's.
        assert cpu_seconds(workers) - before >= 0.3
    deadline = time.monotonic() + 10
    while alive(everything) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not alive(everything), f"processes left after SIGTERM: {alive(everything)}"


def test_one_worker_renders_in_its_processes_and_sigterm_leaves_none(
    settings: Settings, signer: TokenSigner, tmp_path: Path
) -> None:
    port = free_port()
    config = write_config(settings, port, tmp_path / "opentime.toml")
    with config.open("a") as file:
        file.write("image_render_processes = 2\n")
    render_and_stop(config, port, tmp_path / "server.log", signer, processes=2)


def test_two_workers_each_render_in_their_own_process(
    settings: Settings, signer: TokenSigner, shared_redis: tuple[str, str], tmp_path: Path
) -> None:
    port = free_port()
    config = two_workers_config(settings, port, tmp_path / "opentime.toml", shared_redis)
    # image_render_processes = 0: the CPUs shared between the two workers, at least one each.
    each = max(1, len(os.sched_getaffinity(0)) // 2)
    render_and_stop(config, port, tmp_path / "server.log", signer, processes=2 * each)


def test_a_killed_server_leaves_no_render_process(
    settings: Settings, signer: TokenSigner, tmp_path: Path
) -> None:
    port = free_port()
    config = write_config(settings, port, tmp_path / "opentime.toml")
    with config.open("a") as file:
        file.write("image_render_processes = 2\n")
    with running(["serve", "--config", str(config)], port, tmp_path / "server.log") as server:
        workers = render_processes(server.pid)
        everything = descendants(server.pid)
        assert len(workers) == 3  # the fork server and two render processes
        assert httpx.get(banner_urls(f"http://127.0.0.1:{port}", signer)[0]).status_code == 200
        os.kill(server.pid, signal.SIGKILL)  # no lifespan shutdown: the pool is never shut down
        server.wait(10)
        deadline = time.monotonic() + 10
        while alive(everything) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not alive(everything), f"processes left after SIGKILL: {alive(everything)}"
