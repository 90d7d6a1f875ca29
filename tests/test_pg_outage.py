"""A real ``opentime serve`` on PostgreSQL while PostgreSQL stops answering, then comes back.

A TCP proxy (tests/tcp_proxy.py) stands between the server and PostgreSQL; pausing it makes the
database hang (connections accepted, nothing answered), the hardest kind of outage. While it hangs a
webhook is refused with 503 (nothing acknowledged) once ``database_timeout_ms`` runs out, and an
amp-list open still answers 200 with its fallback within its budget. After the proxy resumes both work
again in the same process, without a restart.
"""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import orjson
import pytest

from app.demo import demo_rows, recipient_id
from app.security.tokens import TokenSigner
from app.security.webhook_auth import sign_header
from tests.conftest import SENDER, load_rows
from tests.pg import HOST, PORT, fresh_pg_url, query
from tests.servers import free_port, running
from tests.tcp_proxy import TcpProxy

pytestmark = pytest.mark.server
SECRET = "whsec-outage-test-0123456789"
TIMEOUT_MS = 1000


def post_event(client: httpx.Client, url: str, event_id: str, recipient: str) -> httpx.Response:
    body = orjson.dumps(
        {
            "id": event_id,
            "type": "profile.updated",
            "recipient": recipient,
            "occurred_at": "2024-05-01T10:00:00Z",
            "payload": {"tier": "outage"},
        }
    )
    header = sign_header([SECRET], int(time.time()), body)
    headers = {"content-type": "application/json", "opentime-signature": header}
    return client.post(url, content=body, headers=headers)


def open_list(
    client: httpx.Client, base: str, signer: TokenSigner, recipient: str
) -> tuple[httpx.Response, float]:
    token = signer.sign("demo", recipient, now=int(time.time()))
    start = time.monotonic()
    response = client.get(f"{base}/v1/{token}/list/hello.json", headers={"AMP-Email-Sender": SENDER})
    return response, time.monotonic() - start


def test_pg_hangs_then_comes_back(keys_file: Path, signer: TokenSigner, tmp_path: Path) -> None:
    with TcpProxy(HOST, PORT) as proxy, fresh_pg_url(port=proxy.port) as url:
        load_rows(url, list(demo_rows(10)))
        port = free_port()
        config = tmp_path / "opentime.toml"
        config.write_text(
            f'public_base_url = "http://127.0.0.1:{port}"\nkeys_file = "{keys_file}"\n'
            f'database_url = "{url}"\ndatabase_timeout_ms = {TIMEOUT_MS}\n'
            f'allowed_senders = ["{SENDER}"]\nwebhook_secrets = ["{SECRET}"]\nport = {port}\n'
        )
        base, hook = f"http://127.0.0.1:{port}", f"http://127.0.0.1:{port}/webhooks/events"
        with (
            running(["serve", "--config", str(config)], port, tmp_path / "server.log"),
            httpx.Client(timeout=10) as client,
        ):
            assert post_event(client, hook, "before", recipient_id(1)).status_code == 200
            response, _ = open_list(client, base, signer, recipient_id(2))
            assert response.status_code == 200 and "x-opentime-fallback" not in response.headers

            proxy.pause()
            start = time.monotonic()
            refused = post_event(client, hook, "during", recipient_id(1))
            assert refused.status_code == 503, refused.text
            assert time.monotonic() - start < TIMEOUT_MS / 1000 + 2  # the deadline, not a hang
            response, took = open_list(client, base, signer, recipient_id(3))
            assert response.status_code == 200
            assert response.headers["x-opentime-fallback"] == "budget-exceeded"
            assert took < 0.15 + 0.5  # hello.json's budget_ms = 150, plus loopback slack

            proxy.resume()
            deadline = time.monotonic() + 10  # connections stuck in the outage time out, then are replaced
            while post_event(client, hook, "after", recipient_id(1)).status_code != 200:
                assert time.monotonic() < deadline, "webhooks did not recover"
                time.sleep(0.2)
            response, _ = open_list(client, base, signer, recipient_id(4))
            assert response.status_code == 200 and "x-opentime-fallback" not in response.headers
        ids = {row[0] for row in query(url.replace(f":{proxy.port}/", f":{PORT}/"), "SELECT id FROM events")}
        assert ids == {"before", "after"}  # the refused event was not recorded
