"""The upstream wired into the open-time path, against a real HTTP stub on 127.0.0.1.

Store first, then the upstream on a store miss; the block's budget always wins, and a late upstream
answer still fills the cache for the next open.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import orjson
import pytest
from starlette.testclient import TestClient

from app.app import create_app
from app.config import Settings
from app.demo import recipient_id
from app.security.tokens import TokenSigner
from app.services import Services
from tests.conftest import BASE_URL, SENDER
from tests.upstream_stub import UpstreamStub, running_stub

AMP = {"AMP-Email-Sender": SENDER}
ADA = {"first_name": "Ada", "recommendations": [{"name": "Slide rule", "price": 12.0, "sku": "sku-9"}]}


@pytest.fixture
def stub() -> Iterator[UpstreamStub]:
    with running_stub() as running:
        running.profiles["crm-1"] = dict(ADA)
        yield running


@pytest.fixture
def make_client(settings: Settings, stub: UpstreamStub) -> Iterator[Callable[..., TestClient]]:
    clients: list[TestClient] = []

    def make(**changes: Any) -> TestClient:
        configured = settings.replace(upstream_url=f"{stub.url}/profiles/{{recipient}}", **changes)
        client = TestClient(create_app(configured), base_url=BASE_URL)
        clients.append(client.__enter__())
        return client

    yield make
    for client in clients:
        client.__exit__(None, None, None)


def open_list(client: TestClient, signer: TokenSigner, recipient: str, block: str = "hello") -> Any:
    token = signer.sign("demo", recipient, now=int(time.time()))
    return client.get(f"/v1/{token}/list/{block}.json", headers=AMP)


def services_of(client: TestClient) -> Services:
    services: Services = client.app_state["services"]
    return services


def wait_for(condition: Callable[[], bool], timeout: float = 3.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.01)


def test_recipient_unknown_to_the_store_is_served_from_the_upstream(
    make_client: Callable[..., TestClient], signer: TokenSigner, stub: UpstreamStub
) -> None:
    client = make_client()
    response = open_list(client, signer, "crm-1")
    assert response.status_code == 200
    assert "x-opentime-fallback" not in response.headers
    assert orjson.loads(response.content)["items"][0]["first_name"] == "Ada"
    assert response.headers["x-opentime-data-age"] == "0"
    # A stored recipient never reaches the upstream.
    assert "x-opentime-fallback" not in open_list(client, signer, recipient_id(1)).headers
    assert set(stub.requests) == {"crm-1"}


def test_web_view_falls_back_to_the_upstream_too(
    make_client: Callable[..., TestClient], signer: TokenSigner
) -> None:
    client = make_client()
    token = signer.sign("demo", "crm-1", now=int(time.time()))
    response = client.get(f"/v1/{token}/view")
    assert response.status_code == 200
    assert "Hi Ada!" in response.text
    assert "x-opentime-fallback" not in response.headers


def test_unknown_everywhere_is_the_block_fallback_and_remembered(
    make_client: Callable[..., TestClient], signer: TokenSigner, stub: UpstreamStub
) -> None:
    client = make_client()
    for _ in range(3):
        response = open_list(client, signer, "nobody")
        assert response.headers["x-opentime-fallback"] == "unknown-recipient"
        assert "x-opentime-data-age" not in response.headers
    assert stub.requests["nobody"] == 1


def test_slow_upstream_gets_the_fallback_within_budget_then_fresh_data(
    make_client: Callable[..., TestClient], signer: TokenSigner, stub: UpstreamStub
) -> None:
    client = make_client()
    stub.mode, stub.delay_s = "slow", 0.5
    started = time.monotonic()
    response = open_list(client, signer, "crm-1")
    elapsed = time.monotonic() - started
    assert response.status_code == 200
    assert response.headers["x-opentime-fallback"] == "budget-exceeded"
    assert elapsed < 0.15 + 0.2  # the hello block's budget is 150 ms
    wait_for(lambda: len(services_of(client).lists.cache) > 0)  # the late answer filled the cache
    response = open_list(client, signer, "crm-1")
    assert "x-opentime-fallback" not in response.headers
    assert orjson.loads(response.content)["items"][0]["first_name"] == "Ada"
    assert stub.requests["crm-1"] == 1


def test_upstream_down_gives_fallbacks_and_opens_the_breaker(
    make_client: Callable[..., TestClient], signer: TokenSigner, stub: UpstreamStub
) -> None:
    client = make_client(upstream_retries=0)
    stub.mode = "unavailable"
    reasons = [open_list(client, signer, f"down-{i}").headers["x-opentime-fallback"] for i in range(5)]
    assert reasons == ["upstream-unavailable"] * 5
    asked = stub.total_requests
    response = open_list(client, signer, "down-6")
    assert (response.status_code, response.headers["x-opentime-fallback"]) == (200, "circuit-open")
    assert stub.total_requests == asked  # failing fast: the upstream is left alone
    assert services_of(client).upstream is not None
    metrics = client.get("/metrics").text
    assert 'opentime_upstream_breaker_state{state="open"} 1.0' in metrics
    assert 'opentime_open_responses_total{kind="list",outcome="circuit-open"} 1.0' in metrics


def test_an_applied_event_discards_the_upstream_copy(
    make_client: Callable[..., TestClient], signer: TokenSigner, stub: UpstreamStub
) -> None:
    client = make_client()
    assert orjson.loads(open_list(client, signer, "crm-1").content)["items"][0]["first_name"] == "Ada"
    stub.profiles["crm-1"]["first_name"] = "Augusta"
    services = services_of(client)
    client.portal.call(services.invalidation.recipients_changed, ["crm-1"])  # as the event writer does
    response = open_list(client, signer, "crm-1")
    assert orjson.loads(response.content)["items"][0]["first_name"] == "Augusta"
    assert stub.requests["crm-1"] == 2
