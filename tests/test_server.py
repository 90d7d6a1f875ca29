"""A real ``opentime serve`` process on 127.0.0.1, exercised over HTTP."""

from __future__ import annotations

import subprocess
from pathlib import Path

import httpx
import pytest

from app.config import Settings
from tests.conftest import SENDER
from tests.servers import OPENTIME, clean_env, free_port, running, server_config

pytestmark = pytest.mark.server


def write_config(settings: Settings, port: int, path: Path) -> Path:
    return server_config(settings, port, path, allowed_senders=(SENDER, "https://mail.yahoo.example"))


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*OPENTIME, *args], capture_output=True, text=True, env=clean_env(), timeout=60)


def test_token_from_cli_is_accepted_by_running_server(settings: Settings, tmp_path: Path) -> None:
    port = free_port()
    config = write_config(settings, port, tmp_path / "opentime.toml")
    signed = cli(
        "sign",
        "--keys",
        str(settings.keys_file),
        "--campaign",
        "demo",
        "--recipient",
        "cust-0000001",
        "--base-url",
        f"http://127.0.0.1:{port}",
    )
    assert signed.returncode == 0, signed.stderr
    picks = next(
        line.split(": ", 1)[1] for line in signed.stdout.splitlines() if line.startswith("list:picks")
    )
    with running(["serve", "--config", str(config)], port, tmp_path / "server.log"):
        response = httpx.get(picks, headers={"amp-email-SENDER": SENDER})
        assert response.status_code == 200
        assert response.headers["amp-email-allow-sender"] == SENDER
        assert len(response.json()["items"]) == 4
        # Yahoo-style v1: Origin null and a URL in __amp_source_origin, plus extra parameters.
        v1 = httpx.get(
            picks + "?__amp_source_origin=https%3A%2F%2Fmail.yahoo.example&x=1", headers={"Origin": "null"}
        )
        assert v1.status_code == 200
        assert v1.headers["access-control-allow-origin"] == "null"
        assert v1.headers["access-control-allow-credentials"] == "true"
        assert httpx.get(picks, headers={"AMP-Email-Sender": "x@evil.example"}).status_code == 403
        assert httpx.get(f"http://127.0.0.1:{port}/healthz").json() == {"status": "ok"}


def test_serve_refuses_to_start_without_keys(tmp_path: Path) -> None:
    result = cli("serve", "--port", str(free_port()))
    assert result.returncode == 2
    assert "missing setting" in result.stderr


def test_serve_refuses_an_unreadable_key_ring(settings: Settings, tmp_path: Path) -> None:
    port = free_port()
    config = write_config(settings.replace(keys_file=tmp_path / "absent.json"), port, tmp_path / "o.toml")
    result = cli("serve", "--config", str(config))
    assert result.returncode == 2
    assert "absent.json" in result.stderr
