"""Instructions per request of whole servers (uvicorn, httptools, uvloop and the app), counted by callgrind.

    python3 -m bench.callgrind_http                    # 4 servers, 2,000 requests each, ~10 min
    python3 -m bench.callgrind_http --requests 500     # quicker, a little noisier

From the repository root; needs ``valgrind`` (``apt-get install -y valgrind``, which brings
``callgrind_control``). The wall-clock benches (``bench.nodes``, ``bench.decisions``) divide rates
measured seconds apart, and on a shared host the CPU they get swings by a third within a minute;
instruction counts do not move with it. The servers are those of ``bench.decisions`` (SQLite, the
demo's ``picks`` list, every answer a warm cache hit, checked):

- ``baseline``: the bare Starlette route (``bench/baseline_app.py``);
- ``off``: the shipped campaigns: the local-hit path of ``bench.nodes`` on the default store;
- ``on``: rules, an A/B experiment and the real exposure recorder (flushes included);
- ``on+zone``: as on, plus a time-of-day rule whose zone comes from the cached profile.

Each server runs under ``valgrind --tool=callgrind --instr-atstart=no``. This process (not under
valgrind) sends every path once to warm it, then turns counting on (``callgrind_control --instr=on``),
sends ``--requests`` requests over ``--connections`` kept-alive connections, turns it off and dumps;
the dump's total over the request count is the figure. User space only: the kernel's socket work is
not counted (the same requests and answers of about the same size for every server). Counts move by
about 1% run to run (the event loop's idle ticks while counting are included).
"""

from __future__ import annotations

import argparse
import asyncio
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import httpx

from app.demo import DEMO_SENDER
from bench.amp_list import BASELINE_APP, ROOT, BenchError, log
from bench.decisions import SERVER, prepare

SERVERS = ("baseline", "off", "on", "on+zone")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=2000, help="measured requests per server")
    parser.add_argument("--connections", type=int, default=16, help="kept-alive connections at once")
    parser.add_argument("--recipients", type=int, default=1000, help="recipients (paths), each warmed")
    args = parser.parse_args(argv)
    if shutil.which("callgrind_control") is None:
        print("error: needs valgrind: apt-get install -y valgrind", file=sys.stderr)
        return 1
    folder = Path(tempfile.mkdtemp(prefix="opentime-callgrind-http-"))
    try:
        configs, paths_file, port = prepare(folder, args.recipients, args.recipients)
        paths = paths_file.read_text().split()
        figures = {}
        for name in SERVERS:
            command = [sys.executable, str(BASELINE_APP), "--port", str(port), "--log-level", "warning"]
            if name != "baseline":
                command = [sys.executable, str(SERVER), "--config", str(configs[name])]
            figures[name] = count(name, command, port, paths, args, folder)
    except BenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    report(figures)
    return 0


def report(figures: dict[str, float]) -> None:
    print(f"\n{'server':<10}{'instructions per request':>26}{'vs baseline':>13}{'vs off':>8}")
    for name, value in figures.items():
        over_base = figures["baseline"] / value
        over_off = "" if name in ("baseline", "off") else f"{figures['off'] / value:.3f}"
        print(f"{name:<10}{value:>26,.0f}{over_base:>13.3f}{over_off:>8}")


def count(
    name: str, command: list[str], port: int, paths: list[str], args: argparse.Namespace, folder: Path
) -> float:
    out = folder / f"{name}.callgrind"
    valgrind = ["valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={out}"]
    log_file = folder / f"{name}.log"
    with log_file.open("w") as sink:
        process = subprocess.Popen([*valgrind, *command], stdout=sink, stderr=subprocess.STDOUT, cwd=ROOT)
    try:
        log(f"{name}: starting under callgrind")
        wait_ready(process, port, log_file)
        checked = name != "baseline"
        asyncio.run(send(port, paths, args.connections, checked))  # every path once: all cached after
        control(process.pid, "--instr=on")
        measured = [paths[i % len(paths)] for i in range(args.requests)]
        started = time.monotonic()
        asyncio.run(send(port, measured, args.connections, checked))
        control(process.pid, "--instr=off")
        control(process.pid, "--dump")
        log(f"{name}: {args.requests:,} requests counted in {time.monotonic() - started:.0f} s")
    finally:
        process.terminate()
        process.wait(60)
    dumps = sorted(folder.glob(f"{name}.callgrind*"))
    totals = [_total(d) for d in dumps if d.stat().st_size]
    if not totals:
        raise BenchError(f"{name}: no callgrind dump in {folder}")
    return max(totals) / args.requests  # the dump asked for; the exit dump holds nothing counted after


def wait_ready(process: subprocess.Popen[bytes], port: int, log_file: Path) -> None:
    deadline = time.monotonic() + 300  # imports under valgrind take a minute or two
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise BenchError(f"server exited with {process.returncode}:\n{log_file.read_text()[-2000:]}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=5).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(1)
    raise BenchError(f"server not ready after 300 s:\n{log_file.read_text()[-2000:]}")


def control(pid: int, option: str) -> None:
    run = subprocess.run(["callgrind_control", option, str(pid)], capture_output=True, text=True, timeout=120)
    if run.returncode != 0:
        raise BenchError(f"callgrind_control {option} failed: {run.stdout}{run.stderr}")


async def send(port: int, paths: list[str], connections: int, checked: bool) -> None:
    """``paths`` over ``connections`` kept-alive connections, each sending its next request when its
    last answer is in (as wrk does); every answer must be a 200 (and, checked, not a fallback)."""
    queue = iter(paths)
    await asyncio.gather(*(_connection(port, queue, checked) for _ in range(connections)))


async def _connection(port: int, queue: Iterator[str], checked: bool) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    head = f"Host: 127.0.0.1:{port}\r\nAMP-Email-Sender: {DEMO_SENDER}\r\n\r\n".encode()
    try:
        for path in queue:  # one iterator shared by every connection: each path is sent once
            writer.write(b"GET " + path.encode() + b" HTTP/1.1\r\n" + head)
            status, headers = await _response(reader)
            if status != 200 or (checked and b"x-opentime-fallback" in headers):
                raise BenchError(f"{path}: {status} {headers!r}")
    finally:
        writer.close()


async def _response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    head = (await reader.readuntil(b"\r\n\r\n")).lower()
    status = int(head.split(b" ", 2)[1])
    length = re.search(rb"\r\ncontent-length: *(\d+)", head)
    await reader.readexactly(int(length.group(1)) if length else 0)
    return status, head


def _total(dump: Path) -> int:
    # "totals", not "summary": with --instr-atstart=no callgrind writes "summary: 0" in a dump.
    match = re.search(r"^totals: (\d+)", dump.read_text(), re.MULTILINE)
    return int(match.group(1)) if match else 0


if __name__ == "__main__":
    sys.exit(main())
