"""Webhooks against a real ``opentime serve`` process: crash safety and the CLI round trip."""

from __future__ import annotations

import signal
import sqlite3
import threading
import time
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner

from app.cli.events import events
from app.config import Settings
from app.demo import recipient_id
from app.security.tokens import TokenSigner
from tests.conftest import SENDER
from tests.servers import free_port, running, server_config
from tests.webhook_load import Poster, wait_for_acks

pytestmark = pytest.mark.server
SECRET = "whsec-server-test-0123456789"
POSTERS = 8
KILL_AFTER = 150  # acknowledged events before the SIGKILL


def write_config(settings: Settings, port: int, path: Path) -> Path:
    return server_config(settings, port, path, allowed_senders=(SENDER,), webhook_secrets=(SECRET,))


def stored_ids(settings: Settings) -> set[str]:
    conn = sqlite3.connect(settings.database_url.removeprefix("sqlite:///"))
    try:
        return {row[0] for row in conn.execute("SELECT id FROM events")}
    finally:
        conn.close()


def test_every_acknowledged_event_survives_sigkill(settings: Settings, tmp_path: Path) -> None:
    port = free_port()
    config = write_config(settings, port, tmp_path / "opentime.toml")
    url = f"http://127.0.0.1:{port}/webhooks/events"
    acked: list[str] = []
    stop = threading.Event()
    with running(["serve", "--config", str(config)], port, tmp_path / "server.log") as process:
        posters = [Poster(url, f"p{i}", acked, stop, SECRET) for i in range(POSTERS)]
        for poster in posters:
            poster.start()
        wait_for_acks(acked, KILL_AFTER)
        process.send_signal(signal.SIGKILL)  # mid-stream: requests are in flight
        process.wait()
        stop.set()
        for poster in posters:
            poster.join(10)
    assert len(acked) >= KILL_AFTER
    with running(["serve", "--config", str(config)], port, tmp_path / "server2.log"):
        pass  # restart: opens the database, recovers the WAL
    missing = set(acked) - stored_ids(settings)
    assert not missing, f"{len(missing)} acknowledged events lost, e.g. {sorted(missing)[:5]}"


def test_cli_send_changes_the_next_open(settings: Settings, tmp_path: Path, signer: TokenSigner) -> None:
    port = free_port()
    config = write_config(settings, port, tmp_path / "opentime.toml")
    base = f"http://127.0.0.1:{port}"
    token = signer.sign("demo", recipient_id(2), now=int(time.time()))
    picks = f"{base}/v1/{token}/list/picks.json"
    payload = '{"recommendations": [{"name": "From the CLI", "price": 1, "sku": "c", "image": "c.jpg"}]}'
    args = ["send", "--url", base, "--recipient", recipient_id(2), "--type", "profile.updated"]
    with running(["serve", "--config", str(config)], port, tmp_path / "server.log"):
        assert len(httpx.get(picks, headers={"AMP-Email-Sender": SENDER}).json()["items"]) == 4
        result = CliRunner().invoke(
            events, [*args, "--payload", payload, "--id", "cli-1"], env={"OPENTIME_WEBHOOK_SECRET": SECRET}
        )
        assert result.exit_code == 0, result.output
        assert result.output.startswith("200 ")
        items = httpx.get(picks, headers={"AMP-Email-Sender": SENDER}).json()["items"]
        assert [i["name"] for i in items] == ["From the CLI"]
        wrong = CliRunner().invoke(events, [*args, "--secret", "whsec-wrong-0123456789", "--payload", "{}"])
        assert wrong.exit_code == 1
        assert wrong.output.startswith("401 ")
    bad_json = CliRunner().invoke(events, [*args, "--secret", SECRET, "--payload", "{nope"])
    assert bad_json.exit_code == 2
