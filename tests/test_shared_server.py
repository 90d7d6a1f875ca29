"""End to end: two real ``opentime serve`` processes on one SQLite file and one Redis, and ``opentime
import`` run as its own process, announcing through Redis."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import httpx
import orjson
import pytest

from app.config import Settings
from app.demo import recipient_id
from app.security.tokens import TokenSigner
from app.security.webhook_auth import sign_header
from tests.conftest import SENDER
from tests.redis_tools import wait_until
from tests.servers import OPENTIME, clean_env, free_port, running, server_config

pytestmark = pytest.mark.server
SECRET = "whsec-e2e-redis-0123456789"


def write_config(settings: Settings, port: int, path: Path, url: str, prefix: str) -> Path:
    changes = {"allowed_senders": (SENDER,), "webhook_secrets": (SECRET,)}
    return server_config(settings, port, path, redis_url=url, redis_key_prefix=prefix, **changes)


def picks(base: str, signer: TokenSigner, recipient: str) -> list[str]:
    token = signer.sign("demo", recipient, now=int(time.time()))
    response = httpx.get(f"{base}/v1/{token}/list/picks.json", headers={"AMP-Email-Sender": SENDER})
    assert response.status_code == 200, response.text
    return [item["name"] for item in response.json()["items"]]


def redis_up(base: str) -> bool:
    return bool(httpx.get(f"{base}/readyz").json()["redis"] == "up")


def recommending(name: str) -> dict[str, object]:
    return {"recommendations": [{"name": name, "price": 1.0, "sku": "sku-e2e", "image": "x.jpg"}]}


def test_two_servers_share_events_and_the_replay_guard(
    settings: Settings, signer: TokenSigner, tmp_path: Path, shared_redis: tuple[str, str]
) -> None:
    ports = [free_port(), free_port()]
    configs = [write_config(settings, p, tmp_path / f"n{p}.toml", *shared_redis) for p in ports]
    a, b = (f"http://127.0.0.1:{p}" for p in ports)
    with (
        running(["serve", "--config", str(configs[0])], ports[0], tmp_path / "a.log"),
        running(["serve", "--config", str(configs[1])], ports[1], tmp_path / "b.log"),
    ):
        for base in (a, b):
            wait_until(lambda u=base: redis_up(u), 10.0, "redis not up")
        recipient = recipient_id(4)
        assert len(picks(b, signer, recipient)) == 4  # cached on b
        body = orjson.dumps(
            {
                "id": "e2e-1",
                "type": "profile.updated",
                "recipient": recipient,
                "occurred_at": "2024-05-01T10:00:00Z",
                "payload": recommending("From node a"),
            }
        )
        headers = {
            "content-type": "application/json",
            "opentime-signature": sign_header([SECRET], int(time.time()), body),
        }
        assert httpx.post(f"{a}/webhooks/events", content=body, headers=headers).status_code == 200
        wait_until(lambda: picks(b, signer, recipient) == ["From node a"], 1.0, "b kept the old data")
        replayed = httpx.post(f"{b}/webhooks/events", content=body, headers=headers)
        assert replayed.status_code == 401 and replayed.json()["reason"] == "replayed"
        metrics = httpx.get(f"{b}/metrics").text
        assert "opentime_redis_up 1.0" in metrics
        assert 'opentime_redis_invalidations_total{direction="received"}' in metrics


def test_opentime_import_announces_its_changes_to_running_servers(
    settings: Settings, signer: TokenSigner, tmp_path: Path, shared_redis: tuple[str, str]
) -> None:
    port = free_port()
    config = write_config(settings, port, tmp_path / "opentime.toml", *shared_redis)
    base = f"http://127.0.0.1:{port}"
    recipient = recipient_id(5)
    with running(["serve", "--config", str(config)], port, tmp_path / "server.log"):
        wait_until(lambda: redis_up(base), 10.0, "redis not up")
        assert len(picks(base, signer, recipient)) == 4  # cached
        data = tmp_path / "people.jsonl"
        data.write_bytes(orjson.dumps({"recipient_id": recipient, "attributes": recommending("Imported")}))
        imported = subprocess.run(
            [*OPENTIME, "import", str(data), "--config", str(config)],
            env=clean_env(),
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert imported.returncode == 0, imported.stderr
        assert "not announced" not in imported.stderr
        wait_until(lambda: picks(base, signer, recipient) == ["Imported"], 1.0, "the server kept old data")
