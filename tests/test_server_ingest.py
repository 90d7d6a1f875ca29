"""Stream ingest inside ``opentime serve`` (setting ``ingest_url``): real server processes, the
machine's RabbitMQ (a queue of each test's own), real SQLite files, and Redis for several workers.

Broker restarts go through a ``TcpProxy`` in front of the shared broker (stopped, then started again on
the same port), never by restarting the broker itself.
"""

from __future__ import annotations

import re
import signal
import subprocess
from pathlib import Path

import httpx
import pytest

from app.config import FIELDS_BY_NAME, Settings, load_settings, masked
from app.demo import recipient_id
from app.errors import ConfigError
from app.security.tokens import TokenSigner
from tests.amqp_tools import BROKER_URL, counts, publish, take_all, url_via
from tests.redis_tools import wait_until
from tests.servers import OPENTIME, clean_env, free_port, running, server_config, wait_ready
from tests.tcp_proxy import TcpProxy
from tests.test_shared_server import picks, recommending, write_config
from tests.test_stream_ingest import applied, event, queue_name, wait_for

__all__ = ["queue_name"]  # the fixture

REQUIRED = {
    "OPENTIME_PUBLIC_BASE_URL": "https://amp.example.com",
    "OPENTIME_KEYS_FILE": "/tmp/keys.json",  # never read: settings only
    "OPENTIME_ALLOWED_SENDERS": "news@example.com",
}


def test_ingest_settings_are_checked_and_the_password_never_shown() -> None:
    env = {**REQUIRED, "OPENTIME_INGEST_URL": "amqp://app:hunter2-secret@mq:5672/prod"}
    with pytest.raises(ConfigError, match=r"setting ingest_url .* also needs ingest_queue"):
        load_settings(env)
    settings = load_settings({**env, "OPENTIME_INGEST_QUEUE": "events"}).settings
    assert settings.ingest_prefetch == 100
    assert "hunter2" not in repr(settings)
    assert masked(FIELDS_BY_NAME["ingest_url"], settings.ingest_url) == "amqp://app:****@mq:5672/prod"
    for url in ("http://app:hunter2-secret@mq/", "kafka://app:hunter2-secret@mq:9092", "amqp:///"):
        with pytest.raises(ConfigError) as caught:
            load_settings({**env, "OPENTIME_INGEST_QUEUE": "events", "OPENTIME_INGEST_URL": url})
        message = str(caught.value)
        assert message.startswith("setting ingest_url (env OPENTIME_INGEST_URL) must be an amqp://")
        assert "hunter2" not in message
    for name, value in (("OPENTIME_INGEST_QUEUE", "events"), ("OPENTIME_INGEST_PREFETCH", "10")):
        with pytest.raises(ConfigError, match=rf"setting {name[9:].lower()} .* needs ingest_url"):
            load_settings({**REQUIRED, name: value})
    with pytest.raises(ConfigError, match=r"ingest_queue .* not starting amq"):
        load_settings({**env, "OPENTIME_INGEST_QUEUE": "amq.gen-x"})
    with pytest.raises(ConfigError, match=r"ingest_prefetch .* at most 10000"):
        load_settings({**env, "OPENTIME_INGEST_QUEUE": "q", "OPENTIME_INGEST_PREFETCH": "70000"})


def ingest_config(settings: Settings, port: int, path: Path, queue: str, broker: str = BROKER_URL) -> Path:
    return server_config(
        settings,
        port,
        path,
        webhook_max_body_bytes=2000,
        ingest_url=broker,
        ingest_queue=queue,
        ingest_prefetch=20,
    )


def readyz(base: str) -> dict[str, object]:
    response = httpx.get(f"{base}/readyz")
    assert response.status_code == 200, response.text  # the broker never takes readiness away
    body: dict[str, object] = response.json()
    return body


def ingest_state(base: str) -> object:
    report = readyz(base)["ingest"]
    assert isinstance(report, dict)
    return report["state"]


def metric(base: str, sample: str) -> float:
    text = httpx.get(f"{base}/metrics").text
    found = re.search(rf"^{re.escape(sample)} (\S+)$", text, re.MULTILINE)
    assert found is not None, f"{sample} not in /metrics"
    return float(found.group(1))


@pytest.mark.server
def test_events_from_the_queue_show_in_the_amp_list_and_poison_is_dead_lettered(
    settings: Settings, signer: TokenSigner, tmp_path: Path, queue_name: str
) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log = tmp_path / "server.log"
    recipient = recipient_id(3)
    publish(queue_name, [])  # the queue exists before the server (the dead-letter queue it declares)
    proxy = TcpProxy("127.0.0.1", 5672).start()  # the "broker" the server sees: stopped and restarted
    proxy_up = True
    config = ingest_config(settings, port, tmp_path / "o.toml", queue_name, url_via(proxy.port))
    try:
        with running(["serve", "--config", str(config)], port, log):
            consume_and_dead_letter(base, signer, recipient, queue_name)
            proxy.stop()  # the broker goes away: readiness stays, the state says so
            proxy_up = False
            reconnect(base, signer, recipient, queue_name, proxy.port)
    finally:
        if proxy_up:
            proxy.stop()
    reasons = sorted(headers["x-opentime-reason"] for _, headers in take_all(queue_name + ".dead"))
    assert reasons[0].startswith("event 0 type: must be one of")
    assert reasons[1].startswith("not valid JSON")
    assert "guest:guest" not in log.read_text()  # the broker URL (with its password) is never logged
    assert counts(queue_name) == (0, 0)  # stopped cleanly: everything acked, the consumer gone


def consume_and_dead_letter(base: str, signer: TokenSigner, recipient: str, queue_name: str) -> None:
    wait_until(lambda: ingest_state(base) == "consuming", 10.0, "not consuming")
    assert readyz(base)["ingest"] == {"state": "consuming", "queue": queue_name}
    assert len(picks(base, signer, recipient)) == 4  # cached for cache_ttl_seconds (300 s)
    publish(queue_name, [event("streamed-1", recipient, "profile.updated", **recommending("Streamed"))])
    wait_until(lambda: picks(base, signer, recipient) == ["Streamed"], 10.0, "the event never showed")
    publish(queue_name, [b"{not json", event("odd-1", recipient, "spaceship.launched")])
    wait_for(lambda: counts(queue_name + ".dead")[0] == 2, "two dead-lettered messages")
    # Both settled by the consumer (parked, then acked) before the test cuts the broker off.
    dead = 'opentime_ingest_messages_total{outcome="dead_lettered"}'
    wait_until(lambda: metric(base, dead) == 2, 10.0, "the parked messages not settled")


def reconnect(base: str, signer: TokenSigner, recipient: str, queue_name: str, broker_port: int) -> None:
    wait_until(lambda: ingest_state(base) == "connecting", 10.0, "the outage not seen")
    publish(queue_name, [event("streamed-2", recipient, "profile.updated", **recommending("Later"))])
    with TcpProxy("127.0.0.1", 5672, port=broker_port):  # ... and comes back on the same address
        wait_until(lambda: ingest_state(base) == "consuming", 20.0, "no reconnect")
        wait_until(lambda: picks(base, signer, recipient) == ["Later"], 10.0, "the event never showed")
        assert metric(base, 'opentime_ingest_messages_total{outcome="acked"}') == 2
        # Parked at least once: an ack still in flight when the connection dropped parks its message
        # again after the redelivery; every park is in the dead-letter queue, and nothing else is.
        parked = metric(base, 'opentime_ingest_messages_total{outcome="dead_lettered"}')
        assert 2 <= parked <= 4 and counts(queue_name + ".dead")[0] == parked  # each once or twice
        assert metric(base, 'opentime_ingest_events_total{status="applied"}') == 2
        assert metric(base, "opentime_ingest_reconnects_total") == 1
        assert metric(base, "opentime_ingest_connected") == 1


def start(config: Path, port: int, log: Path) -> subprocess.Popen[str]:
    with log.open("a") as out:
        process = subprocess.Popen(
            [*OPENTIME, "serve", "--config", str(config)],
            stdout=out,
            stderr=subprocess.STDOUT,
            text=True,
            env={**clean_env(), "PYTHONUNBUFFERED": "1"},
        )
    wait_ready(f"http://127.0.0.1:{port}", process)
    return process


@pytest.mark.server
def test_a_server_killed_mid_stream_loses_no_acked_event(
    settings: Settings, tmp_path: Path, queue_name: str
) -> None:
    total = 3000
    recipients = [f"k-{i}" for i in range(total)]
    publish(queue_name, [event(f"e-{r}", r, "profile.updated", n=r) for r in recipients])
    port = free_port()
    config = ingest_config(settings, port, tmp_path / "o.toml", queue_name)
    db = settings.database_url
    process = start(config, port, tmp_path / "server.log")
    try:
        wait_for(lambda: applied(db, recipients) >= 200, "the first events committed", 30)
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    committed = applied(db, recipients)
    assert committed < total, "not killed mid-stream: make the stream longer"
    # Unacked messages go back to the queue once the broker sees the connection gone.
    wait_for(lambda: counts(queue_name)[1] == 0, "the dead consumer gone")
    ready = counts(queue_name)[0]
    # Each event is committed or still queued (or both: committed, not acked yet). An acked message
    # whose event is not in the store would make this sum fall short.
    assert committed + ready >= total
    process = start(config, port, tmp_path / "server.log")
    try:
        wait_for(lambda: applied(db, recipients) == total, f"all {total} events committed", 60)
        wait_for(lambda: counts(queue_name) == (0, 1), "the queue drained")
    finally:
        process.terminate()  # uvicorn re-raises SIGTERM once shut down: the exit status is -15
        process.wait(timeout=30)
    assert counts(queue_name) == (0, 0)
    assert counts(queue_name + ".dead")[0] == 0


@pytest.mark.server
def test_every_worker_consumes_the_queue_and_each_event_lands_once(
    settings: Settings, tmp_path: Path, shared_redis: tuple[str, str], queue_name: str
) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    config = write_config(settings, port, tmp_path / "redis.toml", *shared_redis)
    lines = config.read_text() + f'workers = 2\ningest_url = "{BROKER_URL}"\ningest_queue = "{queue_name}"\n'
    config.write_text(lines + "ingest_prefetch = 5\n")
    recipients = [f"w-{i}" for i in range(1000)]
    with running(["serve", "--config", str(config)], port, tmp_path / "server.log"):
        wait_for(lambda: counts(queue_name)[1] == 2, "a consumer in each worker")
        # Batches of 10 events, some sent twice: duplicates land on either worker and are no-ops.
        batches = [
            [event(f"e-{r}", r, "profile.updated", n=r) for r in recipients[i : i + 10]]
            for i in range(0, 1000, 10)
        ]
        publish(queue_name, batches + batches[:20])
        wait_for(lambda: applied(settings.database_url, recipients) == 1000, "all events committed", 60)
        wait_for(lambda: counts(queue_name)[0] == 0, "the queue drained")
        # Whichever worker answers adds up the others' counters from their snapshots (written about
        # once a second: app.worker_metrics), so the totals show up within a second or two.
        wanted = {'messages_total{outcome="acked"}': 120, 'events_total{status="applied"}': 1000}
        wanted['events_total{status="duplicate"}'] = 200
        wait_until(
            lambda: all(metric(base, f"opentime_ingest_{k}") == v for k, v in wanted.items()), 10.0, "counts"
        )
    assert counts(queue_name + ".dead")[0] == 0
