"""Start real ``opentime`` processes on 127.0.0.1 for tests and benchmarks."""

from __future__ import annotations

import dataclasses
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from app.cli.serve import write_toml
from app.config import PROJECT_ROOT, Settings

OPENTIME = [sys.executable, "-m", "app"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def server_config(settings: Settings, port: int, path: Path, **changes: Any) -> Path:
    """``settings`` (with ``changes``) as the TOML file of a server on 127.0.0.1:``port``: written by
    ``write_toml``, the writer ``serve --demo`` and the benchmarks use, so it reads back the same."""
    served = dataclasses.replace(settings, public_base_url=f"http://127.0.0.1:{port}", port=port, **changes)
    return write_toml(path, served)


def clean_env() -> dict[str, str]:
    """The environment without ``OPENTIME_*``, and with this checkout first on ``PYTHONPATH``: a
    process started in another folder (``cwd``) must still run this tree's ``app``, not whichever
    one is installed."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENTIME_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PROJECT_ROOT), env.get("PYTHONPATH")]))
    return env


def wait_ready(base_url: str, process: subprocess.Popen[str], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}")
        try:
            if httpx.get(f"{base_url}/readyz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise TimeoutError(f"{base_url} not ready after {timeout}s")


@contextmanager
def running(
    args: list[str], port: int, log: Path, *, cwd: Path | None = None, env: Mapping[str, str] | None = None
) -> Iterator[subprocess.Popen[str]]:
    """Run ``opentime <args>`` until the block ends; its output goes (unbuffered) to ``log``.

    ``env``: variables added to the clean environment (say ``TMPDIR``)."""
    env = {**clean_env(), "PYTHONUNBUFFERED": "1", **(env or {})}
    with log.open("w") as out:
        process = subprocess.Popen(
            [*OPENTIME, *args], stdout=out, stderr=subprocess.STDOUT, text=True, env=env, cwd=cwd
        )
        try:
            wait_ready(f"http://127.0.0.1:{port}", process)
            yield process
        finally:
            stop(process)


def stop(process: subprocess.Popen[str]) -> None:
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
