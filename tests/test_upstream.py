"""The upstream profile client against a real HTTP server on 127.0.0.1 (tests/upstream_stub.py).

Time for the cache, breaker and token expiry comes from a fake clock; backoff sleeps are recorded
instead of slept; socket timeouts and budgets are real (and short).
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import httpx
import orjson
import pytest

from app.content.budget import Deadlines
from app.content.profiles import Loaded, ProfileLoader
from app.content.shared_work import SharedWork
from app.store.base import Profile, StoreError
from app.upstream.breaker import BreakerState, CircuitBreaker
from app.upstream.client import (
    CircuitOpen,
    OAuth2ClientCredentials,
    StaticHeaderAuth,
    UpstreamBadResponse,
    UpstreamClient,
    UpstreamConfig,
    UpstreamRejected,
    UpstreamResult,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from tests.servers import free_port
from tests.upstream_stub import CLIENT_ID, CLIENT_SECRET, UpstreamStub, blackhole, running_stub

ALICE: dict[str, object] = {"first_name": "Alice", "tier": "gold"}


class NoProfiles:
    """A profile store with nobody in it: every open-time lookup goes on to the upstream."""

    def fetch(
        self,
        recipient_id: str,
        callback: Callable[[Profile | StoreError | None], None],
        wanted: Callable[[], bool] | None = None,
    ) -> None:
        callback(None)


async def lookup(client: UpstreamClient, recipient: str, budget_s: float) -> tuple[bytes | None, str | None]:
    """What an open sees of the upstream: attributes or a reason, within the budget (the app's own path)."""
    loader = ProfileLoader(NoProfiles(), client)  # type: ignore[arg-type]  # only fetch is needed
    work: SharedWork[str, Loaded] = SharedWork(None, Deadlines())
    waiter, _ = work.join(recipient, budget_s)
    loader.load(recipient, lambda loaded: work.answer(recipient, loaded, None))
    result = await waiter
    return (None, result) if isinstance(result, str) else (result.attributes, None)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class RecordedSleep:
    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)


@pytest.fixture
def stub() -> Iterator[UpstreamStub]:
    with running_stub() as server:
        server.profiles["alice"] = ALICE
        yield server


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def sleep() -> RecordedSleep:
    return RecordedSleep()


def config(base_url: str, **overrides: Any) -> UpstreamConfig:
    defaults: dict[str, Any] = {
        "connect_timeout_s": 0.2,
        "read_timeout_s": 0.3,
        "total_timeout_s": 1.0,
        "retries": 0,
        "backoff_base_s": 0.1,
        "backoff_cap_s": 0.5,
        "breaker_threshold": 3,
        "breaker_reset_s": 10.0,
        "fresh_ttl_s": 60.0,
        "stale_ttl_s": 600.0,
        "negative_ttl_s": 30.0,
        "max_response_bytes": 64 * 1024,
        "max_fetches": 100,
    }
    return UpstreamConfig(url_template=f"{base_url}/profiles/{{recipient}}", **(defaults | overrides))


@pytest.fixture
def make(clock: FakeClock, sleep: RecordedSleep) -> Callable[..., UpstreamClient]:
    def build(base_url: str, **overrides: Any) -> UpstreamClient:
        return UpstreamClient(config(base_url, **overrides), clock=clock, sleep=sleep, rng=lambda: 0.5)

    return build


@pytest.fixture
async def upstream(stub: UpstreamStub, make: Callable[..., UpstreamClient]) -> AsyncIterator[UpstreamClient]:
    async with make(stub.url) as client:
        yield client


async def eventually(condition: Callable[[], bool], within: float = 2.0) -> None:
    deadline = time.monotonic() + within
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.005)


def attributes(result: UpstreamResult) -> Any:
    assert result.attributes is not None, result
    return orjson.loads(result.attributes)


# --- basic protocol ---------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_found_profile_is_a_validated_object(upstream: UpstreamClient) -> None:
    result = await upstream.fetch("alice")
    assert attributes(result) == ALICE
    assert result.error is None and result.reason is None and not result.stale


@pytest.mark.anyio
async def test_recipient_id_is_url_encoded(stub: UpstreamStub, upstream: UpstreamClient) -> None:
    # An id with "/" or "?" must not reach another path or add a query on the upstream.
    stub.profiles["a/b?c=d&e f@x"] = {"ok": True}
    assert attributes(await upstream.fetch("a/b?c=d&e f@x")) == {"ok": True}
    assert stub.paths == ["/profiles/a%2Fb%3Fc%3Dd%26e%20f%40x"]


@pytest.mark.anyio
async def test_static_header_auth_is_sent(stub: UpstreamStub, make: Callable[..., UpstreamClient]) -> None:
    async with make(stub.url, auth=StaticHeaderAuth("X-Api-Key", "k-123")) as client:
        await client.fetch("alice")
    assert stub.headers[0]["x-api-key"] == "k-123"


@pytest.mark.anyio
@pytest.mark.parametrize("mode", ["bad-json", "not-object", "big"])
async def test_unusable_bodies_are_bad_responses(
    stub: UpstreamStub, upstream: UpstreamClient, mode: str
) -> None:
    stub.mode = mode
    result = await upstream.fetch("alice")
    assert isinstance(result.error, UpstreamBadResponse)
    assert result.reason == "upstream-bad-response"
    assert upstream.breaker.failures == 0  # a live upstream answered


@pytest.mark.anyio
async def test_size_cap_without_content_length() -> None:
    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"pad": "'
        for _ in range(100):
            yield b"x" * 1024
        yield b'"}'

    transport = httpx.MockTransport(lambda request: httpx.Response(200, content=chunks()))
    async with UpstreamClient(
        config("http://up.test", max_response_bytes=8192), transport=transport
    ) as client:
        result = await client.fetch("alice")
    assert isinstance(result.error, UpstreamBadResponse)
    assert "exceeds 8192" in str(result.error)


@pytest.mark.anyio
async def test_dropped_connection_is_unavailable_never_an_httpx_error(
    stub: UpstreamStub, upstream: UpstreamClient
) -> None:
    stub.mode = "drop"
    result = await upstream.fetch("alice")
    assert isinstance(result.error, UpstreamUnavailable)


def test_config_is_validated() -> None:
    with pytest.raises(ValueError, match="recipient"):
        dataclasses.replace(config("http://x"), url_template="https://crm.example.com/profiles")
    with pytest.raises(ValueError, match="timeouts"):
        config("http://x", read_timeout_s=0)
    secret = OAuth2ClientCredentials("https://t", "id", "hunter2")
    assert "hunter2" not in repr(config("http://x", auth=secret))
    assert "k-123" not in repr(StaticHeaderAuth("X-Api-Key", "k-123"))


# --- timeouts and retries ---------------------------------------------------------------------------


@pytest.mark.anyio
async def test_read_timeout(stub: UpstreamStub, upstream: UpstreamClient) -> None:
    stub.mode = "hang"
    started = time.monotonic()
    result = await upstream.fetch("alice")
    assert isinstance(result.error, UpstreamTimeout)
    assert result.reason == "upstream-timeout"
    # The 0.3 s read timeout ended it, not an instant failure. uvloop times a timer from the loop's
    # cached clock (libuv's uv_now, read once per iteration), so on a busy machine it can fire up to
    # an iteration's length before 0.3 s of wall time: 0.22 s was seen.
    assert 0.15 < time.monotonic() - started < 0.6


@pytest.mark.anyio
async def test_connect_timeout(make: Callable[..., UpstreamClient]) -> None:
    with blackhole() as url:
        async with make(url, connect_timeout_s=0.1) as client:
            started = time.monotonic()
            result = await client.fetch("alice")
    assert isinstance(result.error, UpstreamTimeout)
    assert "ConnectTimeout" in str(result.error)
    assert time.monotonic() - started < 0.5


@pytest.mark.anyio
async def test_refused_connection_is_retried_with_jittered_backoff(
    make: Callable[..., UpstreamClient], sleep: RecordedSleep
) -> None:
    async with make(f"http://127.0.0.1:{free_port()}", retries=3) as client:
        result = await client.fetch("alice")
    assert isinstance(result.error, UpstreamUnavailable)
    # full jitter with rng=0.5: half of base * 2**attempt, capped at 0.5
    assert sleep.delays == [0.05, 0.1, 0.2]


@pytest.mark.anyio
async def test_backoff_is_capped(make: Callable[..., UpstreamClient], sleep: RecordedSleep) -> None:
    async with make(f"http://127.0.0.1:{free_port()}", retries=5, backoff_cap_s=0.3) as client:
        await client.fetch("alice")
    assert sleep.delays == [0.05, 0.1, 0.15, 0.15, 0.15]


@pytest.mark.anyio
async def test_flaky_upstream_succeeds_on_retry(
    stub: UpstreamStub, make: Callable[..., UpstreamClient], sleep: RecordedSleep
) -> None:
    stub.mode = "flaky"
    async with make(stub.url, retries=2) as client:
        assert attributes(await client.fetch("alice")) == ALICE
    assert stub.requests["alice"] == 2
    assert sleep.delays == [0.05]


@pytest.mark.anyio
async def test_retry_after_is_honoured_up_to_the_cap(
    stub: UpstreamStub, make: Callable[..., UpstreamClient], sleep: RecordedSleep
) -> None:
    stub.mode = "unavailable"
    for retry_after in ("2", "120"):
        stub.retry_after = retry_after
        async with make(stub.url, retries=1, backoff_cap_s=5.0, total_timeout_s=10.0) as client:
            await client.fetch("alice")
    assert sleep.delays == [2.0, 5.0]


@pytest.mark.anyio
async def test_no_retry_that_would_end_past_the_deadline(
    stub: UpstreamStub, make: Callable[..., UpstreamClient], sleep: RecordedSleep
) -> None:
    stub.mode, stub.retry_after = "unavailable", "2"
    async with make(stub.url, retries=3, backoff_cap_s=5.0, total_timeout_s=1.0) as client:
        result = await client.fetch("alice")
    assert isinstance(result.error, UpstreamUnavailable)
    assert stub.requests["alice"] == 1 and sleep.delays == []


@pytest.mark.anyio
@pytest.mark.parametrize(("mode", "error"), [("forbidden", UpstreamRejected), ("error", UpstreamUnavailable)])
async def test_4xx_and_500_are_not_retried(
    stub: UpstreamStub, make: Callable[..., UpstreamClient], sleep: RecordedSleep, mode: str, error: type
) -> None:
    stub.mode = mode
    async with make(stub.url, retries=3) as client:
        result = await client.fetch("alice")
    assert isinstance(result.error, error)
    assert stub.requests["alice"] == 1 and sleep.delays == []


@pytest.mark.anyio
async def test_total_deadline_bounds_all_retries(stub: UpstreamStub) -> None:
    stub.mode = "hang"
    cfg = config(stub.url, read_timeout_s=0.15, total_timeout_s=0.4, retries=10, backoff_base_s=0.01)
    started = time.monotonic()
    async with UpstreamClient(cfg) as client:
        result = await client.fetch("alice")
    assert isinstance(result.error, UpstreamTimeout)
    assert 2 <= stub.requests["alice"] <= 3
    # Ten retries of 0.15 s would take over 1.5 s: well under that proves the 0.4 s total bound, with room
    # for a busy machine's scheduling delays.
    assert time.monotonic() - started < 0.9


# --- circuit breaker --------------------------------------------------------------------------------


def test_breaker_state_machine() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(2, 10.0, clock=clock)
    breaker.record_failure()
    assert breaker.allow() and breaker.state is BreakerState.CLOSED
    breaker.record_failure()
    assert breaker.state is BreakerState.OPEN and not breaker.allow()
    breaker.record_failure()  # a call from before it opened: does not extend the open period
    clock.advance(10)
    assert breaker.state is BreakerState.HALF_OPEN
    assert breaker.allow()  # the probe
    assert not breaker.allow()  # only one
    breaker.record_failure()  # probe failed: open again for a full period
    assert breaker.state is BreakerState.OPEN
    clock.advance(9.9)
    assert not breaker.allow()
    clock.advance(0.1)
    assert breaker.allow()
    breaker.record_success()
    assert breaker.state is BreakerState.CLOSED and breaker.failures == 0 and breaker.allow()


def test_breaker_lost_probe_is_replaced_after_the_reset_time() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(1, 5.0, clock=clock)
    breaker.record_failure()
    clock.advance(5)
    assert breaker.allow()  # this probe's caller never reports back
    clock.advance(4.9)
    assert not breaker.allow()
    clock.advance(0.1)
    assert breaker.allow()


def test_breaker_success_resets_the_count() -> None:
    breaker = CircuitBreaker(2, 1.0, clock=FakeClock())
    breaker.record_failure()
    breaker.record_success()
    breaker.record_failure()
    assert breaker.state is BreakerState.CLOSED


@pytest.mark.anyio
async def test_breaker_opens_fails_fast_and_closes_after_a_probe(
    stub: UpstreamStub, upstream: UpstreamClient, clock: FakeClock
) -> None:
    stub.mode = "error"
    for name in ("a", "b", "c"):
        assert isinstance((await upstream.fetch(name)).error, UpstreamUnavailable)
    assert upstream.breaker.state is BreakerState.OPEN

    started = time.monotonic()
    result = await upstream.fetch("alice")
    assert isinstance(result.error, CircuitOpen) and result.reason == "circuit-open"
    assert await lookup(upstream, "alice", 1.0) == (None, "circuit-open")
    assert time.monotonic() - started < 0.05
    assert stub.total_requests == 3  # nothing reached the upstream while open

    clock.advance(10)
    assert isinstance((await upstream.fetch("alice")).error, UpstreamUnavailable)  # failed probe
    assert upstream.breaker.state is BreakerState.OPEN and stub.total_requests == 4

    clock.advance(10)
    stub.mode = "normal"
    assert attributes(await upstream.fetch("alice")) == ALICE  # successful probe
    assert upstream.breaker.state is BreakerState.CLOSED


# --- cache: stale-while-revalidate, negative caching, coalescing -----------------------------------


@pytest.mark.anyio
async def test_fresh_hits_come_from_cache(
    stub: UpstreamStub, upstream: UpstreamClient, clock: FakeClock
) -> None:
    first = await upstream.fetch("alice")
    clock.advance(59)
    assert await upstream.fetch("alice") == first
    assert stub.requests["alice"] == 1


@pytest.mark.anyio
async def test_stale_is_served_at_once_while_one_refresh_runs(
    stub: UpstreamStub, upstream: UpstreamClient, clock: FakeClock
) -> None:
    await upstream.fetch("alice")
    clock.advance(61)
    stub.profiles["alice"] = {"first_name": "Alicia"}
    stub.mode, stub.delay_s = "slow", 0.2

    started = time.monotonic()
    results = await asyncio.gather(*(upstream.fetch("alice") for _ in range(10)))
    assert await lookup(upstream, "alice", 0.01) == (orjson.dumps(ALICE), None)
    assert time.monotonic() - started < 0.05
    assert all(r.stale and attributes(r) == ALICE for r in results)

    fresh = await upstream.fetch("alice")
    while fresh.stale:  # until the refresh has landed
        assert time.monotonic() - started < 2
        await asyncio.sleep(0.01)
        fresh = await upstream.fetch("alice")
    assert attributes(fresh) == {"first_name": "Alicia"}
    assert stub.requests["alice"] == 2  # exactly one background refresh


@pytest.mark.anyio
async def test_stale_data_survives_a_failing_refresh_until_the_stale_ttl(
    stub: UpstreamStub, upstream: UpstreamClient, clock: FakeClock
) -> None:
    await upstream.fetch("alice")
    stub.mode = "error"
    clock.advance(300)
    assert (await upstream.fetch("alice")).stale
    await eventually(lambda: stub.requests["alice"] == 2)
    clock.advance(400)  # past fresh + stale TTL
    result = await upstream.fetch("alice")
    assert isinstance(result.error, UpstreamUnavailable)


@pytest.mark.anyio
async def test_not_found_is_cached_for_the_negative_ttl(
    stub: UpstreamStub, upstream: UpstreamClient, clock: FakeClock
) -> None:
    for _ in range(5):
        result = await upstream.fetch("nobody")
        assert result.attributes is None and result.error is None and result.reason == "upstream-not-found"
    assert await lookup(upstream, "nobody", 0.05) == (None, "unknown-recipient")
    assert stub.requests["nobody"] == 1
    clock.advance(30)
    await upstream.fetch("nobody")
    assert stub.requests["nobody"] == 2


@pytest.mark.anyio
async def test_failures_are_not_cached(stub: UpstreamStub, upstream: UpstreamClient) -> None:
    stub.mode = "unavailable"
    await upstream.fetch("alice")
    stub.mode = "normal"
    assert attributes(await upstream.fetch("alice")) == ALICE


@pytest.mark.anyio
async def test_concurrent_fetches_share_one_request(stub: UpstreamStub, upstream: UpstreamClient) -> None:
    stub.mode, stub.delay_s = "slow", 0.1
    results = await asyncio.gather(*(upstream.fetch("alice") for _ in range(25)))
    assert {r.attributes for r in results} == {orjson.dumps(ALICE)}
    assert stub.requests["alice"] == 1


@pytest.mark.anyio
async def test_discard_during_a_fetch_keeps_the_old_answer_out_of_the_cache(
    stub: UpstreamStub, upstream: UpstreamClient
) -> None:
    stub.mode, stub.delay_s = "slow", 0.1
    pending = asyncio.ensure_future(upstream.fetch("alice"))
    await eventually(lambda: stub.requests["alice"] == 1)
    upstream.discard("alice")  # e.g. an event changed the profile meanwhile
    assert attributes(await pending) == ALICE
    stub.mode = "normal"
    await upstream.fetch("alice")
    assert stub.requests["alice"] == 2


# --- OAuth2 client credentials ----------------------------------------------------------------------


def oauth(stub: UpstreamStub, secret: str = CLIENT_SECRET) -> OAuth2ClientCredentials:
    return OAuth2ClientCredentials(f"{stub.url}/token", CLIENT_ID, secret, scope="profiles:read")


@pytest.fixture
def oauth_stub(stub: UpstreamStub) -> UpstreamStub:
    stub.oauth = True
    stub.token_ttl_s = 300
    for name in ("bob", "carol", "dave"):
        stub.profiles[name] = {"name": name}
    return stub


@pytest.mark.anyio
async def test_token_is_cached_and_refreshed_before_expiry(
    oauth_stub: UpstreamStub, make: Callable[..., UpstreamClient], clock: FakeClock
) -> None:
    async with make(oauth_stub.url, auth=oauth(oauth_stub)) as client:
        await asyncio.gather(*(client.fetch(name) for name in ("alice", "bob", "carol")))
        assert oauth_stub.tokens_issued == 1  # concurrent cold requests share one token request
        clock.advance(269)
        await client.fetch("dave")
        assert oauth_stub.tokens_issued == 1
        clock.advance(1)  # 30 s before expiry
        client.discard("dave")
        assert attributes(await client.fetch("dave")) == {"name": "dave"}
        assert oauth_stub.tokens_issued == 2
    assert oauth_stub.headers[-1]["authorization"] == "Bearer token-2"


@pytest.mark.anyio
async def test_a_401_refreshes_the_token_once_and_retries(
    oauth_stub: UpstreamStub, make: Callable[..., UpstreamClient]
) -> None:
    async with make(oauth_stub.url, auth=oauth(oauth_stub)) as client:
        await client.fetch("alice")
        oauth_stub.valid_tokens.clear()  # the upstream revoked it early
        results = await asyncio.gather(*(client.fetch(name) for name in ("bob", "carol", "dave")))
    assert all(r.error is None for r in results)
    assert oauth_stub.tokens_issued == 2


@pytest.mark.anyio
async def test_a_401_with_a_fresh_token_is_rejected(
    oauth_stub: UpstreamStub, make: Callable[..., UpstreamClient], sleep: RecordedSleep
) -> None:
    async with make(oauth_stub.url, auth=oauth(oauth_stub), retries=3) as client:
        oauth_stub.valid_tokens = _NeverValid()
        result = await client.fetch("alice")
    assert isinstance(result.error, UpstreamRejected)
    assert oauth_stub.tokens_issued == 2 and sleep.delays == []


@pytest.mark.anyio
async def test_bad_client_credentials_are_rejected(
    oauth_stub: UpstreamStub, make: Callable[..., UpstreamClient]
) -> None:
    async with make(oauth_stub.url, auth=oauth(oauth_stub, secret="wrong")) as client:
        result = await client.fetch("alice")
    assert isinstance(result.error, UpstreamRejected) and "token" in str(result.error)
    assert oauth_stub.total_requests == 0


class _NeverValid(set[str]):
    def __contains__(self, item: object) -> bool:
        return False


# --- the open-time budget ---------------------------------------------------------------------------


@pytest.mark.anyio
async def test_budget_wins_over_a_hanging_upstream(
    stub: UpstreamStub, make: Callable[..., UpstreamClient]
) -> None:
    stub.mode = "hang"
    async with make(stub.url, read_timeout_s=5.0, total_timeout_s=5.0) as client:
        for budget in (0.02, 0.05):
            started = time.monotonic()
            assert await lookup(client, "alice", budget) == (None, "budget-exceeded")
            assert time.monotonic() - started < budget + 0.015
        assert stub.requests["alice"] == 1  # the second lookup joined the first fetch


@pytest.mark.anyio
async def test_a_late_fetch_still_fills_the_cache(stub: UpstreamStub, upstream: UpstreamClient) -> None:
    stub.mode, stub.delay_s = "slow", 0.1
    assert await lookup(upstream, "alice", 0.02) == (None, "budget-exceeded")
    await asyncio.sleep(0.15)
    started = time.monotonic()
    assert await lookup(upstream, "alice", 0.02) == (orjson.dumps(ALICE), None)
    assert time.monotonic() - started < 0.005
    assert stub.requests["alice"] == 1


@pytest.mark.anyio
async def test_lookup_reports_failure_reasons(stub: UpstreamStub, upstream: UpstreamClient) -> None:
    assert await lookup(upstream, "alice", 1.0) == (orjson.dumps(ALICE), None)
    assert await lookup(upstream, "nobody", 1.0) == (None, "unknown-recipient")
    stub.mode = "error"
    assert await lookup(upstream, "bob", 1.0) == (None, "upstream-unavailable")


@pytest.mark.anyio
async def test_aclose_cancels_background_fetches(
    stub: UpstreamStub, make: Callable[..., UpstreamClient]
) -> None:
    stub.mode = "hang"
    client = make(stub.url, read_timeout_s=5.0, total_timeout_s=5.0)
    assert await lookup(client, "alice", 0.01) == (None, "budget-exceeded")
    started = time.monotonic()
    await client.aclose()
    assert time.monotonic() - started < 0.1


class HangingTransport(httpx.AsyncBaseTransport):
    """Never answers; records how many requests are inside the transport (httpx's pool) at once."""

    def __init__(self) -> None:
        self.inside = self.peak = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.inside += 1
        self.peak = max(self.peak, self.inside)
        try:
            await asyncio.Event().wait()
        finally:
            self.inside -= 1
        raise AssertionError("unreachable")


@pytest.mark.anyio
async def test_requests_beyond_the_connection_limit_wait_outside_the_pool(clock: FakeClock) -> None:
    # Regression: with a hanging upstream holding every connection, httpcore's pool rescans its whole
    # queue against every connection on each new request and each cancellation (quadratic), which
    # stalled the event loop ~250 ms past the open-time budget. At most max_connections requests may
    # be in the transport at once; the rest queue on the client's semaphore.
    transport = HangingTransport()
    settings = config("http://upstream.test", read_timeout_s=5.0, total_timeout_s=5.0, max_connections=3)
    async with UpstreamClient(settings, transport=transport, clock=clock) as client:
        results = await asyncio.gather(*(lookup(client, f"r{i}", 0.05) for i in range(20)))
        assert results == [(None, "budget-exceeded")] * 20
        assert transport.peak == 3


def token_transport(expires_in: object, issued: list[str]) -> httpx.MockTransport:
    def handle(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/token":
            issued.append(f"token-{len(issued) + 1}")
            return httpx.Response(200, json={"access_token": issued[-1], "expires_in": expires_in})
        return httpx.Response(200, json={"token": request.headers["authorization"]})

    return httpx.MockTransport(handle)


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("expires_in", "lives"), [(0, 1.0), (-5, 1.0), ("0", 1.0), ("300", 300.0), (7.5, 7.5)]
)
async def test_token_lifetime_is_at_least_a_second_and_may_be_a_numeric_string(
    clock: FakeClock, expires_in: object, lives: float
) -> None:
    # expires_in <= 0 used to make every request fetch a new token; "300" failed every request.
    issued: list[str] = []
    creds = OAuth2ClientCredentials("http://up.test/token", CLIENT_ID, CLIENT_SECRET)
    cfg = config("http://up.test", auth=creds, fresh_ttl_s=0.01)
    async with UpstreamClient(cfg, transport=token_transport(expires_in, issued), clock=clock) as client:
        assert attributes(await client.fetch("alice")) == {"token": "Bearer token-1"}
        clock.advance(lives - min(creds.refresh_margin_s, lives / 2) - 0.01)  # just before the refresh
        assert attributes(await client.fetch("bob")) == {"token": "Bearer token-1"}
        clock.advance(0.02)
        assert attributes(await client.fetch("carol")) == {"token": "Bearer token-2"}


@pytest.mark.anyio
@pytest.mark.parametrize("expires_in", ["soon", "nan", "1e400", True, None, [300]])
async def test_a_token_without_a_numeric_lifetime_is_a_bad_response(
    clock: FakeClock, expires_in: object
) -> None:
    creds = OAuth2ClientCredentials("http://up.test/token", CLIENT_ID, CLIENT_SECRET)
    transport = token_transport(expires_in, [])
    async with UpstreamClient(
        config("http://up.test", auth=creds), transport=transport, clock=clock
    ) as client:
        result = await client.fetch("alice")
    assert isinstance(result.error, UpstreamBadResponse) and "expires_in" in str(result.error)


@pytest.mark.parametrize(
    ("recipient", "path"), [("..", "/profiles/%2E%2E"), (".", "/profiles/%2E"), ("a.b", "/profiles/a%2Eb")]
)
def test_dot_segments_in_recipient_ids_are_encoded(recipient: str, path: str) -> None:
    # A recipient id ".." made https://crm/profiles/.. which httpx resolves to https://crm/: the upstream
    # credentials would go to the CRM's parent resource.
    url = config("https://crm.test").url_for(recipient)
    assert httpx.Request("GET", url).url.raw_path.decode() == path


@pytest.mark.anyio
async def test_a_dot_segment_recipient_stays_under_the_profiles_path(
    stub: UpstreamStub, upstream: UpstreamClient
) -> None:
    stub.profiles[".."] = {"dots": True}
    await upstream.fetch("..")
    assert stub.paths == ["/profiles/%2E%2E"]
