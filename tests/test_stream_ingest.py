"""``opentime ingest`` against the machine's RabbitMQ: a real consumer process, a real SQLite store.

Each test has its own queue (``queue_name``); broker outages go through a ``TcpProxy`` in front of the
shared broker, never by restarting it.
"""

from __future__ import annotations

import asyncio
import signal
import sqlite3
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import orjson
import pytest

from app.config import Settings
from app.demo import recipient_id
from app.security.tokens import TokenSigner
from app.store import open_store
from tests.amqp_tools import BROKER_URL, counts, publish, queue_name, take_all, url_via
from tests.redis_tools import wait_until
from tests.servers import OPENTIME, clean_env, free_port, running
from tests.tcp_proxy import TcpProxy
from tests.test_shared_server import picks, recommending, redis_up, write_config

__all__ = ["queue_name"]  # the fixture

WHEN = "2024-05-01T10:00:00Z"


HUGE = (
    b'{"id": "huge-1", "type": "profile.updated", "recipient": "carol",'
    b' "occurred_at": "2024-05-01T10:00:00Z", "payload": {"points": 18446744073709551616}}'
)


def event(event_id: str, recipient: str, event_type: str = "purchase", **payload: Any) -> dict[str, Any]:
    payload = payload or {"total": 10.0}
    return {
        "id": event_id,
        "type": event_type,
        "recipient": recipient,
        "occurred_at": WHEN,
        "payload": payload,
    }


def profile(url: str, recipient: str) -> dict[str, Any] | None:
    async def read() -> dict[str, Any] | None:
        store = open_store(url)
        await store.open()
        try:
            found = await store.profiles.get(recipient)
        finally:
            await store.close()
        return None if found is None else dict(orjson.loads(found.attributes))

    return asyncio.run(read())


@contextmanager
def consumer(
    tmp_path: Path, db: str, queue: str, broker: str = BROKER_URL, *extra: str
) -> Iterator[subprocess.Popen[str]]:
    log = tmp_path / "ingest.log"
    args = ["ingest", "--database-url", db, "--from", broker, "--queue", queue, "--progress-every", "1"]
    with log.open("a") as out:
        process = subprocess.Popen(
            [*OPENTIME, *args, *extra],
            stdout=out,
            stderr=subprocess.STDOUT,
            text=True,
            env={**clean_env(), "PYTHONUNBUFFERED": "1"},
        )
        try:
            yield process
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()


def wait_for(check: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def log_text(tmp_path: Path) -> str:
    return (tmp_path / "ingest.log").read_text()


def terminate(process: subprocess.Popen[str]) -> int:
    process.send_signal(signal.SIGTERM)
    return process.wait(timeout=30)


def test_events_reach_the_store_once_and_poison_goes_to_the_dead_letter_queue(
    tmp_path: Path, queue_name: str
) -> None:
    db = f"sqlite:///{tmp_path / 'p.db'}"
    purchase = event("order-1", "alice", total=25.0)
    publish(
        queue_name,
        [
            purchase,
            [
                event("view-1", "bob", "product.viewed", sku="A1"),
                event("p-1", "bob", "profile.updated", tier="gold"),
            ],
            purchase,  # the same id again: applied once
            b"this is not JSON",
            event("bad-1", "carol", total=-1),  # invalid payload
            event("odd-1", "carol", "spaceship.launched"),  # unknown type
            event("big-1", "carol", "profile.updated", note="x" * 3000),  # over webhook_max_body_bytes
            HUGE,  # an integer past 64 bits: refused, not stored as a float
        ],
    )
    config = tmp_path / "opentime.toml"
    config.write_text("webhook_max_body_bytes = 2000\n")
    with consumer(tmp_path, db, queue_name, BROKER_URL, "--config", str(config)) as process:
        wait_for(lambda: counts(queue_name + ".dead")[0] == 5, "five dead-lettered messages")
        wait_for(lambda: counts(queue_name)[0] == 0, "the queue to drain")
        assert terminate(process) == 0

    alice, bob = profile(db, "alice"), profile(db, "bob")
    assert alice is not None and alice["totals"] == {"orders": 1, "spent": 25.0}
    assert bob is not None and bob["tier"] == "gold" and bob["recently_viewed"][0]["sku"] == "A1"
    assert profile(db, "carol") is None
    dead = take_all(queue_name + ".dead")
    reasons = {body: headers["x-opentime-reason"] for body, headers in dead}
    assert reasons[b"this is not JSON"].startswith("not valid JSON")
    assert "payload.total" in reasons[orjson.dumps(event("bad-1", "carol", total=-1))]
    assert "type: must be one of" in reasons[orjson.dumps(event("odd-1", "carol", "spaceship.launched"))]
    big = orjson.dumps(event("big-1", "carol", "profile.updated", note="x" * 3000))
    assert reasons[big] == "body larger than 2000 bytes"
    assert "signed 64 bits" in reasons[HUGE]
    log = (tmp_path / "ingest.log").read_text()
    assert "stopped: messages 8, events applied 3, duplicates 1, dead-lettered 5, retried 0" in log


def applied(url: str, recipients: list[str]) -> int:
    async def read() -> int:
        store = open_store(url)
        await store.open()
        try:
            return len(await store.profiles.get_many(recipients))
        finally:
            await store.close()

    return asyncio.run(read())


def test_broker_connection_dropped_mid_stream_reconnects_and_loses_nothing(
    tmp_path: Path, queue_name: str
) -> None:
    db = f"sqlite:///{tmp_path / 'p.db'}"
    recipients: list[str] = []

    def wave(size: int) -> None:
        start = len(recipients)
        batch = [f"r-{i}" for i in range(start, start + size)]
        recipients.extend(batch)
        publish(queue_name, [event(f"e-{r}", r, "profile.updated", n=r) for r in batch])

    with (
        TcpProxy("127.0.0.1", 5672) as proxy,
        consumer(tmp_path, db, queue_name, url_via(proxy.port), "--prefetch", "10") as process,
    ):
        for connection in range(1, 4):
            wait_for(lambda: log_text(tmp_path).count("consuming ") == connection, "a connection")  # noqa: B023
            wave(200)
            time.sleep(0.05)
            proxy.reset()  # mid-stream: messages in flight on the lost channel come back
            wave(50)  # published while the consumer is away
            wait_for(lambda: applied(db, recipients) == len(recipients), f"{len(recipients)} events applied")
        wait_for(lambda: counts(queue_name)[0] == 0, "the queue to drain")
        assert terminate(process) == 0
    assert applied(db, recipients) == 750
    assert counts(queue_name + ".dead")[0] == 0
    log = log_text(tmp_path)
    assert log.count("broker connection lost") >= 3 and log.count("consuming ") >= 4
    assert "dead-lettered 0, retried 0" in log.splitlines()[-1]


def test_store_down_is_not_poison_and_an_unacked_message_survives_sigkill(
    tmp_path: Path, queue_name: str
) -> None:
    path = tmp_path / "p.db"
    db = f"sqlite:///{path}"
    applied(db, [])  # creates the store
    lock = sqlite3.connect(path, isolation_level=None)
    lock.execute("BEGIN EXCLUSIVE")  # every write waits, then fails: the store is "down"
    publish(queue_name, [event("order-9", "dave", total=5.0)])
    with consumer(tmp_path, db, queue_name) as process:
        wait_for(lambda: "store failed" in (tmp_path / "ingest.log").read_text(), "a failed commit", 20)
        assert counts(queue_name + ".dead")[0] == 0
        process.kill()  # SIGKILL, with the message delivered again and not acked
        process.wait()
    wait_for(lambda: counts(queue_name) == (1, 0), "the message back in the queue")
    lock.execute("ROLLBACK")
    lock.close()
    assert profile(db, "dave") is None
    with consumer(tmp_path, db, queue_name) as process:
        wait_for(lambda: profile(db, "dave") is not None, "the event applied")
        wait_for(lambda: counts(queue_name)[0] == 0, "the queue to drain")
        assert terminate(process) == 0
    assert profile(db, "dave") == {**(profile(db, "dave") or {}), "totals": {"orders": 1, "spent": 5.0}}


def test_sigterm_finishes_the_message_in_flight_before_exiting(tmp_path: Path, queue_name: str) -> None:
    path = tmp_path / "p.db"
    db = f"sqlite:///{path}"
    applied(db, [])
    lock = sqlite3.connect(path, isolation_level=None)
    lock.execute("BEGIN EXCLUSIVE")  # the commit waits (SQLite's busy timeout) while the lock is held
    publish(queue_name, [event("order-7", "erin", total=7.0)])
    with consumer(tmp_path, db, queue_name) as process:
        wait_for(lambda: counts(queue_name)[0] == 0, "the message taken")
        time.sleep(0.3)
        process.send_signal(signal.SIGTERM)
        time.sleep(0.5)
        assert process.poll() is None  # still committing what it took
        lock.execute("ROLLBACK")
        lock.close()
        assert process.wait(timeout=30) == 0
    assert profile(db, "erin") is not None
    assert counts(queue_name) == (0, 0)  # acked: not delivered again
    assert "stopped: messages 1, events applied 1" in log_text(tmp_path)


@pytest.mark.server
def test_a_running_server_drops_its_cached_copy_when_an_event_arrives_by_queue(
    settings: Settings, signer: TokenSigner, tmp_path: Path, shared_redis: tuple[str, str], queue_name: str
) -> None:
    port = free_port()
    config = write_config(settings, port, tmp_path / "opentime.toml", *shared_redis)
    base = f"http://127.0.0.1:{port}"
    recipient = recipient_id(5)
    with running(["serve", "--config", str(config)], port, tmp_path / "server.log"):
        wait_until(lambda: redis_up(base), 10.0, "redis not up")
        assert len(picks(base, signer, recipient)) == 4  # cached for cache_ttl_seconds (300 s)
        publish(queue_name, [event("streamed-1", recipient, "profile.updated", **recommending("Streamed"))])
        db = settings.database_url
        with consumer(tmp_path, db, queue_name, BROKER_URL, "--config", str(config)) as process:
            wait_for(lambda: "messages 1," in log_text(tmp_path), "the message acked")
            wait_until(
                lambda: picks(base, signer, recipient) == ["Streamed"], 1.0, "the server kept old data"
            )
            assert terminate(process) == 0
