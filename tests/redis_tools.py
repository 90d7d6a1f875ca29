"""Real Redis for tests: the machine's shared one (a unique key prefix per test, never flushed) and
private ``redis-server`` processes on free ports, which a test may stop and start again."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis

from tests.servers import free_port

SHARED_URL = "redis://127.0.0.1:6379/0"


def unavailable(reason: str) -> None:
    """Skip with ``reason``; under CI=true fail instead (CI starts Redis: tools/start-services.sh)."""
    if os.environ.get("CI") == "true":
        pytest.fail(reason)
    pytest.skip(reason)


def answers(url: str) -> bool:
    client = redis.Redis.from_url(url, socket_connect_timeout=0.5, socket_timeout=0.5)
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False
    finally:
        client.close()


@pytest.fixture
def shared_redis() -> Iterator[tuple[str, str]]:
    """(url, prefix) of the machine's Redis with a prefix of this test's own; its keys go afterwards."""
    if not answers(SHARED_URL):
        unavailable(f"Redis does not answer at {SHARED_URL}")
    prefix = f"test:{uuid.uuid4().hex[:12]}:"
    yield SHARED_URL, prefix
    client = redis.Redis.from_url(SHARED_URL)
    try:
        keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


class PrivateRedis:
    """``redis-server`` on a free port, nothing saved: ``stop()`` is an outage, ``start()`` a restart."""

    def __init__(self, folder: Path) -> None:
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self._folder = folder
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        command = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", ""]
        command += ["--appendonly", "no", "--dir", str(self._folder)]
        self._process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_until(lambda: answers(self.url), 10.0, "private redis-server did not start")

    def stop(self) -> None:
        if self._process is not None:
            self._process.send_signal(signal.SIGCONT)  # a paused server must still die
            self._process.kill()  # an outage, not a shutdown: no goodbye to the clients
            self._process.wait()
            self._process = None

    def pause(self) -> None:
        """Redis hangs: connections stay open and nothing answers (SIGSTOP)."""
        assert self._process is not None
        self._process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self._process is not None
        self._process.send_signal(signal.SIGCONT)

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(self.url)


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    if shutil.which("redis-server") is None:
        unavailable("redis-server is not installed (apt-get install redis-server)")
    server = PrivateRedis(tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def wait_until(condition: Callable[[], bool], timeout: float, message: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.02)
    raise AssertionError(message)
