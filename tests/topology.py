"""The deployed topology without containers: three real ``opentime serve`` nodes on 127.0.0.1 against
one PostgreSQL schema and one Redis key prefix, behind a real ``varnishd`` running the shipped
``deploy/varnish/default.vcl`` (only its backend addresses rewritten), so tests test that file.

``Topology`` is a context manager the tests (tests/test_topology.py) and a person at a shell
(``python3 -m tests.topology``, README "Without containers") start the same way.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from datetime import UTC, datetime
from pathlib import Path

import httpx

from app.cli.serve import write_toml
from app.config import PROJECT_ROOT, load_settings
from app.demo import demo_rows
from app.security.keyring import new_keyring, save_keyring
from tests.conftest import SENDER, load_rows
from tests.redis_tools import unavailable, wait_until
from tests.servers import clean_env, free_port, stop, wait_ready

VCL = PROJECT_ROOT / "deploy" / "varnish" / "default.vcl"
# A backend's address in the shipped VCL: one `.host = "..."; .port = "...";` pair per node, in order.
BACKEND_ADDRESS = re.compile(r'\.host = "[^"]*"; \.port = "[^"]*";')
OTHER_SENDER = "offers@example.org"
WEBHOOK_SECRET = "whsec-topology-test-0123456789"
RECIPIENTS = 40


def topology_vcl(ports: Sequence[int]) -> str:
    """The shipped VCL with its backends on 127.0.0.1 at ``ports`` (one per backend, in order)."""
    text = VCL.read_text()
    found = len(BACKEND_ADDRESS.findall(text))
    if found != len(ports):
        raise ValueError(f"{VCL} declares {found} backends, the topology has {len(ports)} nodes")
    addresses = iter(ports)
    return BACKEND_ADDRESS.sub(lambda _: f'.host = "127.0.0.1"; .port = "{next(addresses)}";', text)


def varnishd_path() -> str:
    """``varnishd`` (Debian puts it in /usr/sbin); skips when missing, fails under CI=true."""
    found = shutil.which("varnishd") or shutil.which("varnishd", path="/usr/sbin:/usr/local/sbin")
    if found is None:
        unavailable("varnishd is not installed (apt-get install varnish)")
    assert found is not None
    return found


class Node:
    """One ``opentime serve`` process on its own port; started, SIGKILLed and started again."""

    def __init__(self, folder: Path, name: str, config: dict[str, object]) -> None:
        self.name, self.folder, self.port = name, folder, free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        settings = load_settings({}, None, host="127.0.0.1", port=self.port, **config).settings
        self.config = write_toml(folder / f"{name}.toml", settings)
        self.process: subprocess.Popen[str] | None = None
        self.runs = 0

    def start(self) -> None:
        self.launch()
        self.wait_ready()

    def launch(self) -> None:
        log = (self.folder / f"{self.name}-{self.runs}.log").open("w")
        self.runs += 1
        env = {**clean_env(), "PYTHONUNBUFFERED": "1"}
        command = [sys.executable, "-m", "app", "serve", "--config", str(self.config)]
        with log:
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, text=True, env=env)

    def wait_ready(self) -> None:
        assert self.process is not None
        wait_ready(self.base, self.process, timeout=60.0)  # three starting at once on a busy machine

    def kill(self) -> None:
        """A crash: no shutdown, connections dropped mid-flight."""
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()
        self.process = None

    def stop(self) -> None:
        if self.process is not None:
            stop(self.process)
            self.process = None

    def opens_served(self) -> int:
        """Open-time responses this process has answered (its /metrics, read directly, not via the CDN)."""
        text = httpx.get(f"{self.base}/metrics", timeout=5).text
        counts = re.findall(r"^opentime_open_responses_total\{[^}]*\} ([0-9.e+]+)$", text, re.MULTILINE)
        return int(sum(float(count) for count in counts))


class Varnish:
    """``varnishd`` in the foreground with its own working folder (``-n``) and listening port."""

    def __init__(self, folder: Path, port: int, backend_ports: Sequence[int], purge_token: str) -> None:
        self.port = port
        self.base = f"http://127.0.0.1:{self.port}"
        self.workdir = folder / "varnish"
        self.vcl = folder / "default.vcl"
        self.vcl.write_text(topology_vcl(backend_ports))
        self.purge_token = purge_token
        self.process: subprocess.Popen[str] | None = None

    def start(self) -> None:
        command = [varnishd_path(), "-F", "-n", str(self.workdir), "-a", f"127.0.0.1:{self.port}"]
        # -j none: tests run as whatever user they are; the working folder needs no other user's access.
        command += ["-f", str(self.vcl), "-s", "malloc,64m", "-j", "none", "-T", "127.0.0.1:0"]
        command += ["-p", "ban_lurker_sleep=0.01"]
        env = {**os.environ, "VARNISH_PURGE_TOKEN": self.purge_token}
        log = (self.workdir.parent / "varnishd.log").open("w")
        with log:
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, text=True, env=env)
        wait_until(self._answers, 20.0, "varnishd did not start (see varnishd.log)")

    def _answers(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            raise RuntimeError(f"varnishd exited with {self.process.returncode}")
        try:
            return httpx.get(f"{self.base}/healthz", timeout=1).status_code == 200
        except httpx.TransportError:
            return False

    def healthy(self) -> dict[str, bool]:
        """Each backend's probe verdict, as ``varnishadm backend.list`` reports it."""
        out = subprocess.run(
            ["varnishadm", "-n", str(self.workdir), "backend.list"],
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout
        verdicts = re.findall(r"^\S+\.(node\d)\s+\S+\s+\S+\s+(\S+)", out, re.MULTILINE)
        return {name: state == "healthy" for name, state in verdicts}

    def stop(self) -> None:
        if self.process is not None:
            stop(self.process)
            self.process = None


class Topology:
    """Three nodes and the proxy; ``base`` is what mail clients reach (the proxy)."""

    def __init__(self, folder: Path, keys_file: Path, pg_url: str, redis_url: str, prefix: str) -> None:
        self.folder = folder
        self.purge_token = secrets.token_hex(16)
        proxy_port = free_port()
        self.base = f"http://127.0.0.1:{proxy_port}"
        config: dict[str, object] = {
            "public_base_url": self.base,  # URLs in answers name the CDN, as in production
            "keys_file": str(keys_file),
            "allowed_senders": f"{SENDER},{OTHER_SENDER}",
            "database_url": pg_url,
            "redis_url": redis_url,
            "redis_key_prefix": prefix,
            "webhook_secrets": WEBHOOK_SECRET,
        }
        self.nodes = [Node(folder, f"node{i + 1}", config) for i in range(3)]
        ports = [node.port for node in self.nodes]
        self.varnish = Varnish(folder, proxy_port, ports, self.purge_token)

    def __enter__(self) -> Topology:
        with ExitStack() as stack:
            stack.callback(self.close)
            start_all(self.nodes)
            self.varnish.start()
            self.wait_healthy()
            stack.pop_all()
        return self

    def wait_healthy(self) -> None:
        wait_until(lambda: all(self.varnish.healthy().values()), 10.0, "varnish never saw every node")

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.varnish.stop()
        for node in self.nodes:
            node.stop()


def start_all(nodes: Sequence[Node]) -> None:
    """Side by side: each takes seconds to import and open its store."""
    for node in nodes:
        node.launch()
    for node in nodes:
        node.wait_ready()


def new_keys(folder: Path) -> Path:
    path = folder / "keys.json"
    save_keyring(new_keyring(datetime.now(UTC)), path, overwrite=False)
    return path


def load_demo(pg_url: str) -> None:
    load_rows(pg_url, list(demo_rows(RECIPIENTS)))


@contextmanager
def by_hand() -> Iterator[Topology]:
    """For ``python3 -m tests.topology``: a fresh schema, a Redis prefix and a key ring of its own."""
    from tests.pg import fresh_pg_url

    folder = Path(tempfile.mkdtemp(prefix="opentime-topology-"))
    with fresh_pg_url() as pg_url:
        load_demo(pg_url)
        prefix = f"topology:{secrets.token_hex(6)}:"
        with Topology(folder, new_keys(folder), pg_url, "redis://127.0.0.1:6379/0", prefix) as topology:
            yield topology


def main() -> None:
    # `kill` stops it like Ctrl-C: the nodes, varnishd and the schema go too.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    with by_hand() as topology:
        print(f"CDN (varnish): {topology.base}   purge token: {topology.purge_token}")
        for node in topology.nodes:
            print(f"{node.name}: {node.base}   config: {node.config}")
        print(f"files and logs: {topology.folder}; Ctrl-C stops everything")
        config = topology.nodes[0].config
        print(f"URLs: opentime sign --config {config} --campaign demo --recipient cust-0000001")
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
