"""Privacy requests against real ``opentime serve`` processes: an erasure on one node of two sharing
PostgreSQL and Redis empties the other's answers within the fan-out promise; an export returns what
was posted; the retention pass deletes old rows and keeps new ones, once per period among nodes."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import httpx
import orjson
import pytest

from app.config import Settings
from app.demo import demo_rows, recipient_id
from app.ingest.events import parse_event
from app.security.tokens import TokenSigner
from app.security.webhook_auth import sign_header
from app.store import open_store
from app.store.base import Submission
from tests.conftest import SENDER, load_rows, stored_data
from tests.redis_tools import wait_until
from tests.servers import free_port, running, server_config
from tests.test_routes_api import make_key

pytestmark = pytest.mark.server
SECRET = "whsec-privacy-server-0123456789"
DAY = 86400.0


class Node:
    def __init__(self, settings: Settings, folder: Path, name: str, **changes: object) -> None:
        self.name, self.port, self.folder = name, free_port(), folder
        self.base = f"http://127.0.0.1:{self.port}"
        self.config = server_config(settings, self.port, folder / f"{name}.toml", **changes)

    @contextmanager
    def serving(self) -> Iterator[None]:
        with running(["serve", "--config", str(self.config)], self.port, self.folder / f"{self.name}.log"):
            yield

    def picks(self, signer: TokenSigner, recipient: str) -> tuple[list[str], str | None]:
        token = signer.sign("demo", recipient, now=int(time.time()))
        response = httpx.get(f"{self.base}/v1/{token}/list/picks.json", headers={"AMP-Email-Sender": SENDER})
        assert response.status_code == 200, response.text
        names = [item["name"] for item in response.json()["items"]]
        return names, response.headers.get("x-opentime-fallback")

    def metric(self, name: str, **labels: str) -> float:
        shown = ",".join(f'{k}="{v}"' for k, v in labels.items())
        pattern = re.compile(rf"^{re.escape(name)}(?:\{{{re.escape(shown)}\}})? (\S+)$", re.M)
        match = pattern.search(httpx.get(f"{self.base}/metrics", timeout=5).text)
        assert match is not None, f"{name} {labels} not exposed"
        return float(match[1])


def post_event(node: Node, event_id: str, recipient: str, name: str) -> None:
    item = {"name": name, "price": 1.0, "sku": "sku-p", "image": "p.jpg"}
    event = {
        "id": event_id,
        "type": "profile.updated",
        "recipient": recipient,
        "occurred_at": "2024-05-01T10:00:00Z",
        "payload": {"recommendations": [item], "first_name": "Posted"},
    }
    body = orjson.dumps(event)
    headers = {
        "content-type": "application/json",
        "opentime-signature": sign_header([SECRET], int(time.time()), body),
    }
    response = httpx.post(f"{node.base}/webhooks/events", content=body, headers=headers, timeout=10)
    assert response.status_code == 200, response.text


def test_erasure_on_one_node_empties_the_other_within_the_fan_out_promise(
    settings: Settings, tmp_path: Path, signer: TokenSigner, pg_url: str, shared_redis: tuple[str, str]
) -> None:
    load_rows(pg_url, list(demo_rows(10)))
    shared = settings.replace(
        database_url=pg_url,
        redis_url=shared_redis[0],
        redis_key_prefix=shared_redis[1],
        webhook_secrets=(SECRET,),
        retention_days=30,
    )
    erase_key, export_key = make_key(shared, "customers:erase"), make_key(shared, "customers:export")
    a, b = Node(shared, tmp_path, "a"), Node(shared, tmp_path, "b")
    who = recipient_id(3)
    with ExitStack() as stack:
        for node in (a, b):
            stack.enter_context(node.serving())
        for node in (a, b):
            wait_until(
                lambda n=node: httpx.get(f"{n.base}/readyz").json()["redis"] == "up", 10.0, "redis down"
            )

        # What was posted on A is what B exports (and shows).
        post_event(a, "p-1", who, "Posted on A")
        wait_until(lambda: b.picks(signer, who)[0] == ["Posted on A"], 1.0, "b never showed the event")
        export = httpx.get(f"{b.base}/api/customers/{who}/export", headers={"x-api-key": export_key}).json()
        assert export["profile"]["attributes"]["first_name"] == "Posted"
        assert export["profile"]["attributes"]["recommendations"][0]["name"] == "Posted on A"
        assert [(e["id"], e["type"]) for e in export["events"]] == [("p-1", "profile.updated")]

        # Erased on A: B, which has the personal list cached (and Redis a copy), shows the fallback.
        assert b.picks(signer, who) == (["Posted on A"], None)
        response = httpx.delete(f"{a.base}/api/customers/{who}", headers={"x-api-key": erase_key})
        erased_at = time.perf_counter()
        assert response.status_code == 200
        assert response.json()["removed"] == {"profiles": 1, "events": 1, "form_answers": 0}
        while b.picks(signer, who)[1] != "unknown-recipient":
            assert time.perf_counter() - erased_at < 1.0, "node b still served the erased recipient"
        print(f"erasure on A -> fallback on B after {(time.perf_counter() - erased_at) * 1000:.1f} ms")
        assert a.picks(signer, who)[1] == "unknown-recipient"
        time.sleep(0.2)  # nothing puts it back: no late fill of Redis, no node's cache
        assert b.picks(signer, who)[1] == "unknown-recipient"
        export = httpx.get(f"{a.base}/api/customers/{who}/export", headers={"x-api-key": export_key}).json()
        assert (export["profile"], export["events"]) == (None, [])
        assert [e["erasure_id"] for e in export["erasures"]] == [response.json()["erasure_id"]]

        # Both nodes started a retention pass: exactly one of them ran it, the other skipped the period.
        ran = sum(n.metric("opentime_retention_runs_total", outcome="ran") for n in (a, b))
        skipped = sum(n.metric("opentime_retention_runs_total", outcome="skipped") for n in (a, b))
        assert (ran, skipped) == (1, 1)


def fill(url: str, received_at: float, recipient: str, *event_ids: str) -> None:
    """Events received (and a form answer given) at ``received_at``: explicitly old rows."""

    async def commit() -> None:
        store = open_store(url)
        await store.open()
        try:
            items = [
                {
                    "id": i,
                    "type": "profile.updated",
                    "recipient": recipient,
                    "occurred_at": "2024-05-01T09:00:00Z",
                }
                for i in event_ids
            ]
            events = [parse_event({**item, "payload": {"n": 1}}, now=received_at) for item in items]
            await store.events.commit(events, received_at)
            answer = Submission(f"sub-{event_ids[0]}", "demo", "rate", recipient, b'{"rating":"5"}')
            await store.forms.save(answer, received_at)
        finally:
            await store.close()

    asyncio.run(commit())


def test_the_retention_pass_deletes_old_rows_and_keeps_new_ones(settings: Settings, tmp_path: Path) -> None:
    now = time.time()
    fill(settings.database_url, now - 31 * DAY, "r1", "old-1", "old-2")
    fill(settings.database_url, now - 29 * DAY, "r1", "recent")
    node = Node(settings, tmp_path, "solo", retention_days=30, retention_interval_seconds=0.5)
    with node.serving():
        wait_until(
            lambda: [e.id for e in stored_data(settings.database_url, "r1").events] == ["recent"],
            5.0,
            "not expired",
        )
        fill(settings.database_url, now - 40 * DAY, "r2", "late-old")  # found by a later pass
        wait_until(
            lambda: stored_data(settings.database_url, "r2").events == [], 5.0, "a later pass did not run"
        )
        kept = stored_data(settings.database_url, "r1")
        assert [a.submission_id for a in kept.form_answers] == ["sub-recent"]
        assert kept.profile is not None  # profiles are not aged out
        assert node.metric("opentime_retention_deleted_total", table="events") == 3
        assert node.metric("opentime_retention_deleted_total", table="form_submissions") == 2
        assert node.metric("opentime_retention_runs_total", outcome="ran") >= 2
        assert now < node.metric("opentime_retention_last_run_timestamp_seconds") <= time.time()
