"""Several "nodes" (full apps, each with its own lifespan and caches) on one SQLite file and one real
Redis: invalidation fan-out, the shared replay guard, and Redis going away and coming back."""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

import orjson
from starlette.testclient import TestClient

from app.app import create_app
from app.config import Settings
from app.demo import recipient_id
from app.security.tokens import TokenSigner
from app.security.webhook_auth import sign_header
from app.services import running_services
from tests.conftest import BASE_URL, SENDER
from tests.redis_tools import PrivateRedis, wait_until

SECRET = "whsec-nodes-0123456789abcdef"


def node_settings(settings: Settings, url: str, prefix: str) -> Settings:
    return settings.replace(redis_url=url, redis_key_prefix=prefix, webhook_secrets=(SECRET,))


@contextmanager
def nodes(settings: Settings, count: int = 2) -> Iterator[list[TestClient]]:
    with ExitStack() as stack:
        clients = [
            stack.enter_context(TestClient(create_app(settings), base_url=BASE_URL)) for _ in range(count)
        ]
        for client in clients:  # each subscriber is listening before the test writes anything
            wait_until(lambda c=client: c.get("/readyz").json().get("redis") == "up", 10.0, "redis not up")
        yield clients


def picks(client: TestClient, signer: TokenSigner, recipient: str) -> list[str]:
    token = signer.sign("demo", recipient, now=int(time.time()))
    response = client.get(f"/v1/{token}/list/picks.json", headers={"AMP-Email-Sender": SENDER})
    assert response.status_code == 200, response.text
    return [item["name"] for item in response.json()["items"]]


def signed(event_id: str, recipient: str, name: str) -> tuple[bytes, dict[str, str]]:
    fresh = [{"name": name, "price": 9.5, "sku": f"sku-{event_id}", "image": "new.jpg"}]
    body = orjson.dumps(
        {
            "id": event_id,
            "type": "profile.updated",
            "recipient": recipient,
            "occurred_at": "2024-05-01T10:00:00Z",
            "payload": {"recommendations": fresh},
        }
    )
    header = sign_header([SECRET], int(time.time()), body)
    return body, {"content-type": "application/json", "opentime-signature": header}


def post(client: TestClient, request: tuple[bytes, dict[str, str]]) -> Any:
    body, headers = request
    return client.post("/webhooks/events", content=body, headers=headers)


def test_an_event_accepted_on_one_node_is_seen_on_the_other(
    settings: Settings, signer: TokenSigner, shared_redis: tuple[str, str]
) -> None:
    with nodes(node_settings(settings, *shared_redis)) as (a, b):
        recipient = recipient_id(3)
        assert picks(b, signer, recipient) == picks(a, signer, recipient)  # both have it cached now
        assert len(picks(b, signer, recipient)) == 4
        assert post(a, signed("e1", recipient, "Just for you")).status_code == 200
        assert picks(a, signer, recipient) == ["Just for you"]  # the writer's node, at once
        wait_until(lambda: picks(b, signer, recipient) == ["Just for you"], 1.0, "node b kept old data")


def test_the_same_signed_request_is_accepted_once_across_nodes(
    settings: Settings, shared_redis: tuple[str, str]
) -> None:
    with nodes(node_settings(settings, *shared_redis), count=3) as clients:
        request = signed("once", recipient_id(2), "Once")
        assert post(clients[0], request).status_code == 200
        for other in clients[1:]:
            replayed = post(other, request)
            assert replayed.status_code == 401
            assert replayed.json()["reason"] == "replayed"


def test_a_request_that_was_not_acknowledged_may_be_retried_on_another_node(
    settings: Settings, shared_redis: tuple[str, str]
) -> None:
    with nodes(node_settings(settings, *shared_redis)) as (a, b):
        body, headers = signed("later", recipient_id(2), "Later")
        broken = body.replace(b'"payload"', b'"payload":{},"x"')  # still JSON, but no valid event: 400
        header = sign_header([SECRET], int(time.time()), broken)
        request = (broken, {**headers, "opentime-signature": header})
        assert post(a, request).status_code == 400
        assert post(b, request).status_code == 400  # not "replayed": the first was not acknowledged


def test_fan_out_reaches_another_node_within_100_ms_at_p99(
    settings: Settings, shared_redis: tuple[str, str]
) -> None:
    node = node_settings(settings, *shared_redis)

    async def scenario() -> list[float]:
        async with running_services(node) as a, running_services(node) as b:
            heard: asyncio.Queue[tuple[float, frozenset[str]]] = asyncio.Queue()
            b.invalidation.subscribe(lambda changed: heard.put_nowait((time.perf_counter(), changed)))
            for _ in range(500):  # both subscribers listening
                if a.shared and b.shared and a.shared.up and b.shared.up:
                    break
                await asyncio.sleep(0.01)
            latencies = []
            for n in range(300):
                started = time.perf_counter()
                await a.invalidation.recipients_changed([f"r{n}"])
                arrived, changed = await asyncio.wait_for(heard.get(), 1.0)
                assert changed == {f"r{n}"}  # once, and only this change
                latencies.append(arrived - started)
            return latencies

    latencies = sorted(asyncio.run(scenario()))
    p99 = latencies[int(len(latencies) * 0.99) - 1]
    print(f"fan-out a->b: median {statistics.median(latencies) * 1000:.2f} ms, p99 {p99 * 1000:.2f} ms")
    assert p99 <= 0.100


def metric(client: TestClient, name: str) -> float:
    for line in client.get("/metrics").text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} not exposed")


def test_redis_outage_and_restart_change_no_answer(
    settings: Settings, signer: TokenSigner, private_redis: PrivateRedis
) -> None:
    with nodes(node_settings(settings, private_redis.url, "outage:")) as (a, b):
        warm = [recipient_id(n) for n in range(1, 6)]
        before = {r: picks(a, signer, r) for r in warm}
        assert {r: picks(b, signer, r) for r in warm} == before  # cached on both nodes
        assert metric(a, "opentime_redis_up") == 1.0

        private_redis.stop()
        cold = [recipient_id(n) for n in range(6, 12)]
        for recipient in warm + cold:  # warm from the local cache, cold from the store; all 200
            started = time.monotonic()
            names = picks(a, signer, recipient)
            assert time.monotonic() - started < 0.5
            assert len(names) == 4 and names == before.get(recipient, names)
        # An event is still accepted (replay guard: the local one decides) and seen on its own node.
        assert post(a, signed("during", warm[0], "During the outage")).status_code == 200
        assert picks(a, signer, warm[0]) == ["During the outage"]
        ready = a.get("/readyz")
        assert ready.status_code == 200 and ready.json()["redis"] == "down"
        assert metric(a, "opentime_redis_up") == 0.0
        assert metric(a, 'opentime_redis_errors_total{op="subscribe"}') >= 1

        private_redis.start()
        for node in (a, b):
            wait_until(lambda n=node: n.get("/readyz").json()["redis"] == "up", 10.0, "no reconnect")
        # b was deaf during the outage: it dropped its caches on reconnect, so it sees the change now.
        assert picks(b, signer, warm[0]) == ["During the outage"]
        assert metric(b, "opentime_redis_cache_resets_total") >= 2  # start-up, then the reconnect
        # And fan-out works again.
        assert picks(b, signer, warm[1]) == before[warm[1]]
        assert post(a, signed("after", warm[1], "After the restart")).status_code == 200
        wait_until(
            lambda: picks(b, signer, warm[1]) == ["After the restart"], 1.0, "no fan-out after restart"
        )


def test_a_redis_that_hangs_costs_opens_no_more_than_the_redis_timeout(
    settings: Settings, signer: TokenSigner, private_redis: PrivateRedis
) -> None:
    with nodes(node_settings(settings, private_redis.url, "hang:"), count=1) as (a,):
        private_redis.pause()
        try:
            for n in range(1, 12):  # cold opens: Redis never answers, the breaker opens after a few
                started = time.monotonic()
                assert len(picks(a, signer, recipient_id(n))) == 4
                assert time.monotonic() - started < 0.4
            assert metric(a, 'opentime_redis_errors_total{op="get"}') >= 1
            assert metric(a, 'opentime_redis_breaker_state{state="closed"}') == 0.0
        finally:
            private_redis.resume()
        wait_until(lambda: a.get("/readyz").json()["redis"] == "up", 10.0, "no recovery after the pause")


def test_with_redis_down_the_local_guard_decides_and_event_ids_stop_double_application(
    settings: Settings, private_redis: PrivateRedis
) -> None:
    with nodes(node_settings(settings, private_redis.url, "guard:")) as (a, b):
        private_redis.stop()
        request = signed("twice", recipient_id(2), "Twice")
        first = post(a, request)
        assert first.status_code == 200 and first.json()["applied"] == 1
        assert post(a, request).status_code == 401  # the same process still knows it
        second = post(b, request)  # another process cannot ask Redis: accepted, but changes nothing
        assert second.status_code == 200
        assert (second.json()["applied"], second.json()["duplicates"]) == (0, 1)
        assert metric(b, "opentime_redis_replay_local_only_total") == 1.0


def test_without_redis_url_nothing_of_redis_shows(client: TestClient) -> None:
    assert "redis" not in client.get("/readyz").json()
    assert "opentime_redis" not in client.get("/metrics").text


def test_a_local_cache_hit_never_asks_redis(
    settings: Settings, signer: TokenSigner, shared_redis: tuple[str, str]
) -> None:
    def lookups(client: TestClient) -> float:
        results = ("hit", "miss", "tombstone", "unavailable")
        return sum(metric(client, f'opentime_redis_profile_lookups_total{{result="{r}"}}') for r in results)

    with nodes(node_settings(settings, *shared_redis), count=1) as (a,):
        picks(a, signer, recipient_id(7))
        asked = lookups(a)
        assert asked == 1.0
        for _ in range(20):
            picks(a, signer, recipient_id(7))
        assert lookups(a) == asked
