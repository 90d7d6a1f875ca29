"""A plain (not editable) install runs from any folder: a wheel built from this checkout, installed
with ``--no-deps`` into a fresh virtual environment (dependencies from the machine), then its
``opentime`` command run from another folder, with no checkout on ``sys.path``. The wheel must carry
the shipped campaigns and static assets, and ``serve --demo`` must honour ``OPENTIME_*`` settings."""

from __future__ import annotations

import io
import os
import re
import shutil
import subprocess
import sys
import venv
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from PIL import Image

from app.config import PROJECT_ROOT
from tests.servers import free_port, stop, wait_ready

pytestmark = pytest.mark.server

# What a build needs (the Dockerfile's build stage copies the same).
BUILD_INPUTS = ("pyproject.toml", "setup.py", "MANIFEST.in", "README.md", "app", "amp_templates", "static")
SENDER = "news@example.com"


@dataclass(frozen=True)
class Installed:
    bin: Path  # the virtual environment's bin/
    away: Path  # a folder with no checkout in it, the commands' working directory

    def env(self, **settings: str) -> dict[str, str]:
        """The machine's environment without ``OPENTIME_*`` or ``PYTHONPATH``, plus ``settings``."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("OPENTIME_") and k != "PYTHONPATH"}
        return {**env, "PYTHONUNBUFFERED": "1", **settings}

    def run(self, *args: str, **settings: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(self.bin / "opentime"), *args],
            capture_output=True,
            text=True,
            cwd=self.away,
            env=self.env(**settings),
            timeout=120,
        )


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    root = tmp_path_factory.mktemp("wheel")
    source = root / "source"
    source.mkdir()
    for name in BUILD_INPUTS:
        path = PROJECT_ROOT / name
        if path.is_dir():
            shutil.copytree(path, source / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(path, source / name)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    built = subprocess.run(
        [*pip, "wheel", "--no-deps", "-w", str(root / "dist"), str(source)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert built.returncode == 0, built.stdout + built.stderr
    (wheel,) = (root / "dist").glob("opentime-*.whl")
    venv.create(root / "venv", system_site_packages=True, with_pip=False)
    bin_dir = root / "venv" / "bin"
    install = subprocess.run(
        [*pip, "--python", str(bin_dir / "python"), "install", "--no-deps", str(wheel)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert install.returncode == 0, install.stdout + install.stderr
    away = root / "away"
    away.mkdir()
    return Installed(bin_dir, away)


def test_the_installed_package_finds_its_shipped_campaigns_and_static_assets(installed: Installed) -> None:
    where = subprocess.run(
        [
            str(installed.bin / "python"),
            "-c",
            "import app, app.config as c; s = c.Settings.__dataclass_fields__;"
            " print(app.__file__); print(s['templates_dir'].default); print(s['static_dir'].default)",
        ],
        capture_output=True,
        text=True,
        cwd=installed.away,
        env=installed.env(),
        check=True,
    )
    package, templates, static = (Path(line) for line in where.stdout.splitlines())
    site = installed.bin.parent / "lib"
    assert site in package.parents, f"imported {package}, not the installed wheel"
    assert templates == package.parent / "shipped" / "amp_templates"
    assert static == package.parent / "shipped" / "static"
    assert (templates / "demo" / "blocks.toml").is_file()
    assert (static / "fonts").is_dir()


def test_check_config_of_the_installed_package_loads_the_shipped_campaigns(installed: Installed) -> None:
    keys = installed.away / "keys.json"
    generated = installed.run("keys", "generate", "--out", str(keys), "--force")
    assert generated.returncode == 0, generated.stderr
    checked = installed.run(
        "check-config",
        OPENTIME_PUBLIC_BASE_URL="https://amp.example.com",
        OPENTIME_KEYS_FILE=str(keys),
        OPENTIME_ALLOWED_SENDERS=SENDER,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "campaigns: 4" in checked.stdout
    for name in ("cart-recovery", "demo", "flash-sale", "weekly-picks"):
        assert re.search(rf"^  {name}: \d+ blocks", checked.stdout, re.MULTILINE), checked.stdout


@dataclass(frozen=True)
class DemoRun:
    base: str
    text: str

    def printed(self, pattern: str) -> str:
        match = re.search(pattern, self.text)
        assert match, f"the demo did not print {pattern!r}:\n{self.text}"
        return match.group(1)


@pytest.fixture
def run_demo(installed: Installed, tmp_path: Path) -> Iterator[Callable[..., DemoRun]]:
    processes: list[subprocess.Popen[str]] = []

    def start(**settings: str) -> DemoRun:
        port = free_port()
        log = tmp_path / f"demo-{port}.log"
        with log.open("w") as out:
            process = subprocess.Popen(
                [str(installed.bin / "opentime"), "serve", "--demo", "--port", str(port)],
                stdout=out,
                stderr=subprocess.STDOUT,
                text=True,
                cwd=installed.away,
                env=installed.env(**settings),
            )
        processes.append(process)
        base = f"http://127.0.0.1:{port}"
        try:
            wait_ready(base, process, timeout=60)
        except (RuntimeError, TimeoutError) as exc:
            raise AssertionError(f"{exc}:\n{log.read_text()}") from None
        return DemoRun(base, log.read_text())

    yield start
    for process in processes:
        stop(process)


def answers_the_demo_campaign(demo: DemoRun) -> None:
    assert httpx.get(f"{demo.base}/healthz", timeout=5).status_code == 200
    picks = demo.printed(r"-H 'AMP-Email-Sender: news@example.com' (http://\S+/picks\S*)")
    listed = httpx.get(picks, headers={"AMP-Email-Sender": SENDER}, timeout=10)
    assert listed.status_code == 200, listed.text
    assert listed.json()["items"], listed.text
    assert listed.headers.get("x-opentime-fallback") is None, "served the fallback, not the recipient's picks"
    image = httpx.get(demo.printed(r"image \(open in a browser\): (\S+)"), timeout=10)
    assert image.status_code == 200, image.text
    with Image.open(io.BytesIO(image.content)) as decoded:
        assert decoded.format in ("PNG", "GIF", "JPEG", "WEBP")
        assert decoded.size[0] > 0


def test_the_installed_demo_runs_from_another_folder(run_demo: Callable[..., DemoRun]) -> None:
    demo = run_demo()
    answers_the_demo_campaign(demo)


def test_the_installed_demo_honours_opentime_settings(
    run_demo: Callable[..., DemoRun], installed: Installed
) -> None:
    elsewhere = installed.away / "not-the-demo.db"
    demo = run_demo(
        OPENTIME_CACHE_TTL_SECONDS="7",
        OPENTIME_METRICS_TOKEN="demo-metrics-token",
        OPENTIME_DATABASE_URL=f"sqlite:///{elsewhere}",
    )
    answers_the_demo_campaign(demo)
    # A setting the demo owns is named and ignored: its own store, not the one given.
    assert "note: the demo ignores database_url (env OPENTIME_DATABASE_URL)" in demo.text
    assert not elsewhere.exists()
    # The others reach the workers: /metrics now wants the token ...
    assert httpx.get(f"{demo.base}/metrics", timeout=5).status_code == 401
    authorized = {"Authorization": "Bearer demo-metrics-token"}
    assert httpx.get(f"{demo.base}/metrics", headers=authorized, timeout=5).status_code == 200
    # ... and the settings file the workers read has the cache lifetime given.
    config = Path(demo.printed(r"opentime preview --config (\S+)"))
    assert "cache_ttl_seconds = 7.0" in config.read_text().splitlines()


def test_the_demo_says_so_when_the_campaigns_folder_given_has_no_demo_campaign(installed: Installed) -> None:
    empty = installed.away / "no-campaigns"
    empty.mkdir(exist_ok=True)
    done = installed.run("serve", "--demo", "--port", str(free_port()), OPENTIME_TEMPLATES_DIR=str(empty))
    assert done.returncode == 2, done.stdout + done.stderr
    assert f"error: the demo needs the campaign 'demo', which is not in {empty}" in done.stderr
    assert "Traceback" not in done.stderr
