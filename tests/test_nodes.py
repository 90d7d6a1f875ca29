"""Several real ``opentime serve`` nodes on one PostgreSQL and one Redis agree on one truth.

Each node is its own process on 127.0.0.1 with its own in-process caches, as behind a CDN: an event
accepted by one is what every other shows next, a signed webhook is accepted once whichever nodes
it reaches, a node killed mid-ingest loses nothing it acknowledged, and a Redis outage changes no
answer's status. PostgreSQL is the machine's (a fresh schema per test); Redis is a private
``redis-server`` that the test stops and starts again.
"""

from __future__ import annotations

import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from pathlib import Path

import httpx
import orjson
import pytest

from app.cli.serve import write_toml
from app.config import load_settings
from app.demo import demo_rows, recipient_id
from app.security.tokens import TokenSigner
from app.security.webhook_auth import sign_header
from tests.conftest import SENDER, load_rows
from tests.pg import query
from tests.redis_tools import PrivateRedis, wait_until
from tests.servers import free_port, running
from tests.webhook_load import Poster, wait_for_acks

pytestmark = pytest.mark.server
SECRET = "whsec-nodes-test-0123456789"
AMP = {"AMP-Email-Sender": SENDER}


class Node:
    def __init__(self, folder: Path, name: str, keys_file: Path, pg_url: str, redis_url: str) -> None:
        self.name, self.port, self.folder = name, free_port(), folder
        self.base = f"http://127.0.0.1:{self.port}"
        settings = load_settings(
            {},
            None,
            public_base_url=self.base,
            keys_file=str(keys_file),
            allowed_senders=SENDER,
            database_url=pg_url,
            redis_url=redis_url,
            redis_key_prefix="nodes:",
            webhook_secrets=SECRET,
            host="127.0.0.1",
            port=self.port,
        ).settings
        self.config = write_toml(folder / f"{name}.toml", settings)

    @contextmanager
    def serving(self, run: int = 0) -> Iterator[subprocess.Popen[str]]:
        args = ["serve", "--config", str(self.config)]
        with running(args, self.port, self.folder / f"{self.name}-{run}.log") as process:
            yield process

    def picks(self, signer: TokenSigner, recipient: str) -> list[str]:
        token = signer.sign("demo", recipient, now=int(time.time()))
        response = httpx.get(f"{self.base}/v1/{token}/list/picks.json", headers=AMP, timeout=5)
        assert response.status_code == 200, response.text
        return [item["name"] for item in response.json()["items"]]

    def redis(self) -> str:
        return str(httpx.get(f"{self.base}/readyz", timeout=5).json()["redis"])


def nodes(tmp_path: Path, keys_file: Path, pg_url: str, redis_url: str, count: int) -> list[Node]:
    load_rows(pg_url, list(demo_rows(20)))
    return [Node(tmp_path, f"node{i}", keys_file, pg_url, redis_url) for i in range(count)]


def event(event_id: str, recipient: str, name: str) -> tuple[bytes, dict[str, str]]:
    """A signed ``profile.updated`` event whose one recommendation is ``name``: (body, headers)."""
    item = {"name": name, "price": 1.0, "sku": "sku-n", "image": "n.jpg"}
    body = orjson.dumps(
        {
            "id": event_id,
            "type": "profile.updated",
            "recipient": recipient,
            "occurred_at": "2024-05-01T10:00:00Z",
            "payload": {"recommendations": [item]},
        }
    )
    signature = sign_header([SECRET], int(time.time()), body)
    return body, {"content-type": "application/json", "opentime-signature": signature}


def post(node: Node, body: bytes, headers: dict[str, str]) -> httpx.Response:
    return httpx.post(f"{node.base}/webhooks/events", content=body, headers=headers, timeout=10)


def same_countdown(cluster: list[Node], signer: TokenSigner) -> bool:
    """The campaign-wide countdown of the same second, from every node: the same bytes and ETag."""
    token = signer.sign_shared("demo", now=int(time.time()), ttl_seconds=86400)
    for _ in range(5):  # the requests may straddle a second: then try again
        answers = [httpx.get(f"{node.base}/v1/{token}/img/countdown.gif", timeout=5) for node in cluster]
        assert all(a.status_code == 200 and a.headers["content-type"] == "image/gif" for a in answers)
        if len({a.headers["etag"] for a in answers}) == 1:
            return len({a.content for a in answers}) == 1
    return False


def test_three_nodes_agree_and_a_redis_outage_changes_no_status(
    tmp_path: Path, keys_file: Path, signer: TokenSigner, pg_url: str, private_redis: PrivateRedis
) -> None:
    cluster = nodes(tmp_path, keys_file, pg_url, private_redis.url, 3)
    with ExitStack() as stack:
        for node in cluster:
            stack.enter_context(node.serving())
        for node in cluster:
            wait_until(lambda n=node: n.redis() == "up", 10.0, f"{node.name} never heard Redis")
        a, b, c = cluster

        # An event accepted by one node is what the others show next (each had the old list cached).
        who = recipient_id(3)
        assert all(len(node.picks(signer, who)) == 4 for node in cluster)
        assert post(a, *event("n-1", who, "From node 0")).status_code == 200
        for node in (b, c):
            wait_until(lambda n=node: n.picks(signer, who) == ["From node 0"], 1.0, f"{node.name} is stale")

        # The same signed request reaching every node at once is accepted exactly once.
        body, headers = event("n-2", recipient_id(4), "Once")
        with ThreadPoolExecutor(3) as pool:
            answers = list(pool.map(lambda n: post(n, body, headers), cluster))
        assert sorted(r.status_code for r in answers) == [200, 401, 401]
        assert [r.json()["reason"] for r in answers if r.status_code == 401] == ["replayed", "replayed"]

        # A shared countdown needs no coordination: every node draws the same GIF for the same second.
        assert same_countdown(cluster, signer)

        # Redis goes away: every open and every webhook keeps its status; readiness tells.
        cached, uncached = recipient_id(3), recipient_id(5)
        private_redis.stop()
        for node in cluster:
            wait_until(lambda n=node: n.redis() == "down", 10.0, f"{node.name} did not notice the outage")
            assert node.picks(signer, cached) == ["From node 0"]
            assert len(node.picks(signer, uncached)) == 4  # read from PostgreSQL
        assert post(b, *event("n-3", cached, "During the outage")).status_code == 200
        assert b.picks(signer, cached) == ["During the outage"]  # its own caches dropped directly

        # Redis is back: nodes resubscribe (dropping what they may have missed) and agree again.
        private_redis.start()
        for node in cluster:
            wait_until(lambda n=node: n.redis() == "up", 10.0, f"{node.name} did not reconnect")
            wait_until(
                lambda n=node: n.picks(signer, cached) == ["During the outage"], 5.0, f"{node.name} is stale"
            )
        assert post(c, *event("n-4", cached, "After the outage")).status_code == 200
        for node in (a, b):
            wait_until(lambda n=node: n.picks(signer, cached) == ["After the outage"], 1.0, "stale")


def test_a_node_killed_mid_ingest_loses_no_acknowledged_event_and_rejoins(
    tmp_path: Path, keys_file: Path, signer: TokenSigner, pg_url: str, private_redis: PrivateRedis
) -> None:
    victim, survivor = nodes(tmp_path, keys_file, pg_url, private_redis.url, 2)
    acked: list[str] = []
    stop = threading.Event()
    with survivor.serving():
        with victim.serving() as process:
            url = f"{victim.base}/webhooks/events"
            posters = [Poster(url, f"k{i}", acked, stop, SECRET) for i in range(8)]
            for poster in posters:
                poster.start()
            wait_for_acks(acked, 150)
            process.send_signal(signal.SIGKILL)  # requests are in flight
            stop.set()
            for poster in posters:
                poster.join(10)
            assert len(acked) >= 150
            # The other node answers opens throughout.
            assert len(survivor.picks(signer, recipient_id(7))) == 4
        stored = {row[0] for row in query(pg_url, "SELECT id FROM events")}
        missing = set(acked) - stored
        assert not missing, f"{len(missing)} acknowledged events lost, e.g. {sorted(missing)[:5]}"

        # Restarted, the node rejoins with no manual step: it serves and hears the others' changes.
        with victim.serving(run=1):
            wait_until(lambda: victim.redis() == "up", 10.0, "the restarted node never heard Redis")
            who = recipient_id(8)
            assert len(victim.picks(signer, who)) == 4
            assert post(survivor, *event("k-after", who, "After the restart")).status_code == 200
            wait_until(
                lambda: victim.picks(signer, who) == ["After the restart"], 1.0, "restarted node stale"
            )
