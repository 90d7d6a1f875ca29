"""Rate limits against real ``opentime serve`` processes: per API key on /api and the preview, per
webhook secret on /webhooks (after the signature), shared through Redis, and local when Redis is away."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from app.config import Settings
from app.demo import recipient_id
from app.limits.rate import parse_rate
from app.security.apikeys import create_key
from app.security.tokens import TokenSigner
from app.security.webhook_auth import sign_header
from app.store import open_store
from tests.conftest import SENDER
from tests.redis_tools import PrivateRedis, wait_until
from tests.servers import free_port, running, server_config

pytestmark = pytest.mark.server
SECRET_A = "whsec-sender-a-0123456789"
SECRET_B = "whsec-sender-b-0123456789"
UNKNOWN_SECRET = "whsec-not-configured-0123"
# Slow enough that a few requests in a row on a loaded machine stay within one refill.
SLOW = parse_rate("30/min burst 3")


def make_keys(settings: Settings, scopes: list[str], count: int) -> list[str]:
    async def make() -> list[str]:
        store = open_store(settings.database_url)
        await store.open()
        try:
            return [(await create_key(store.api_keys, f"k{i}", scopes, time.time()))[1] for i in range(count)]
        finally:
            await store.close()

    return asyncio.run(make())


@contextmanager
def servers(settings: Settings, tmp_path: Path, count: int = 1, **changes: Any) -> Iterator[list[str]]:
    """``count`` servers on one store with ``changes``; yields their base URLs."""
    changes = {"allowed_senders": (SENDER,), "webhook_secrets": (SECRET_A, SECRET_B), **changes}
    with ExitStack() as stack:
        bases = []
        for _ in range(count):
            port = free_port()
            config = server_config(settings, port, tmp_path / f"s{port}.toml", **changes)
            stack.enter_context(running(["serve", "--config", str(config)], port, tmp_path / f"s{port}.log"))
            bases.append(f"http://127.0.0.1:{port}")
        yield bases


def personalization(base: str, key: str) -> httpx.Response:
    url = f"{base}/api/customers/{recipient_id(1)}/personalization?campaign=demo"
    return httpx.get(url, headers={"Authorization": f"Bearer {key}"}, timeout=10)


def metric(base: str, name: str) -> float:
    match = re.search(rf"^{re.escape(name)} (\S+)$", httpx.get(f"{base}/metrics").text, re.MULTILINE)
    return float(match.group(1)) if match else 0.0


def assert_limited(response: httpx.Response, counted_by: str, burst: int) -> int:
    """A proper 429; returns its Retry-After."""
    assert response.status_code == 429, response.text
    wait = int(response.headers["retry-after"])
    assert 1 <= wait <= 2  # 30/min: one request back every 2 s
    assert response.json() == {"error": f"rate limit exceeded for this {counted_by}, retry in {wait} s"}
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["ratelimit-limit"] == str(burst)
    assert response.headers["ratelimit-remaining"] == "0"
    assert 1 <= int(response.headers["ratelimit-reset"]) <= 2 * burst
    return wait


def test_an_api_key_over_its_limit_waits_and_others_do_not(settings: Settings, tmp_path: Path) -> None:
    key, other = make_keys(settings, ["personalization:read"], 2)
    with servers(settings, tmp_path, rate_limit_api=SLOW) as (base,):
        started = time.monotonic()
        answers = [personalization(base, key) for _ in range(4)]
        assert time.monotonic() - started < 2.0, "too slow to test a 30/min limit"
        assert [r.status_code for r in answers[:3]] == [200, 200, 200]
        assert answers[0].json()["customer"] == recipient_id(1)  # the real answer, not an error page
        wait = assert_limited(answers[3], "API key", 3)
        assert personalization(base, other).status_code == 200  # another key has its own budget
        assert personalization(base, "otk_0123abcd_" + "x" * 43).status_code == 401  # not a 429
        time.sleep(wait)
        assert personalization(base, key).status_code == 200  # recovered after Retry-After
        assert metric(base, 'opentime_rate_limited_total{scope="api"}') == 1.0


def signed_batch(secret: str, event_id: str) -> tuple[bytes, dict[str, str]]:
    body = orjson.dumps(
        {
            "id": event_id,
            "type": "product.viewed",
            "recipient": recipient_id(2),
            "occurred_at": "2024-05-01T10:00:00Z",
            "payload": {"sku": event_id},
        }
    )
    headers = {
        "content-type": "application/json",
        "opentime-signature": sign_header([secret], int(time.time()), body),
    }
    return body, headers


def post(base: str, request: tuple[bytes, dict[str, str]]) -> httpx.Response:
    body, headers = request
    return httpx.post(f"{base}/webhooks/events", content=body, headers=headers, timeout=10)


def test_webhooks_are_limited_per_secret_after_the_signature(settings: Settings, tmp_path: Path) -> None:
    rate = parse_rate("30/min burst 2")
    with servers(settings, tmp_path, rate_limit_webhooks=rate) as (base,):
        # Junk that looks signed but is not: refused 401, and spends nobody's budget.
        for n in range(10):
            assert post(base, signed_batch(UNKNOWN_SECRET, f"junk-{n}")).status_code == 401
        assert [post(base, signed_batch(SECRET_A, f"a-{n}")).status_code for n in range(2)] == [200, 200]
        third = signed_batch(SECRET_A, "a-2")
        wait = assert_limited(post(base, third), "webhook secret", 2)
        assert [post(base, signed_batch(SECRET_B, f"b-{n}")).status_code for n in range(2)] == [200, 200]
        time.sleep(wait)
        # The refused request was not acknowledged: the same signed request is accepted on retry.
        retried = post(base, third)
        assert retried.status_code == 200 and retried.json()["applied"] == 1
        assert metric(base, 'opentime_rate_limited_total{scope="webhooks"}') == 1.0


def test_the_preview_has_its_own_limit_per_key(settings: Settings, tmp_path: Path) -> None:
    (key,) = make_keys(settings, ["preview", "personalization:read"], 1)
    basic = httpx.BasicAuth("marketer", key)
    with servers(settings, tmp_path, rate_limit_preview=parse_rate("30/min burst 2")) as (base,):
        pages = [httpx.get(f"{base}/preview", auth=basic) for _ in range(3)]
        assert [p.status_code for p in pages[:2]] == [200, 200]
        assert "demo" in pages[0].text
        assert_limited(pages[2], "API key", 2)
        assert personalization(base, key).status_code == 200  # the same key's API budget is apart
        assert metric(base, 'opentime_rate_limited_total{scope="preview"}') == 1.0


def test_two_servers_share_one_budget_through_redis(
    settings: Settings, tmp_path: Path, shared_redis: tuple[str, str]
) -> None:
    url, prefix = shared_redis
    (key,) = make_keys(settings, ["personalization:read"], 1)
    limit = parse_rate("30/min burst 4")
    with servers(settings, tmp_path, 2, rate_limit_api=limit, redis_url=url, redis_key_prefix=prefix) as (
        a,
        b,
    ):
        for base in (a, b):
            wait_until(lambda u=base: httpx.get(f"{u}/readyz").json()["redis"] == "up", 10.0, "redis not up")
        started = time.monotonic()
        codes = [personalization(base, key).status_code for base in (a, b, a, b, a, b)]
        assert time.monotonic() - started < 2.0, "too slow to test a 30/min limit"
        assert codes == [200, 200, 200, 200, 429, 429]  # alone, each node would have let 4 through
        assert metric(a, 'opentime_rate_limited_total{scope="api"}') == 1.0
        assert metric(b, 'opentime_rate_limited_total{scope="api"}') == 1.0
        assert metric(a, 'opentime_rate_limit_local_only_total{scope="api"}') == 0.0
        assert metric(a, 'opentime_redis_errors_total{op="ratelimit"}') == 0.0


def test_without_redis_the_limit_holds_per_process_and_nothing_fails(
    settings: Settings, tmp_path: Path, private_redis: PrivateRedis
) -> None:
    (key,) = make_keys(settings, ["personalization:read"], 1)
    # 6/min: the bucket stays empty for the whole test, however slowly the machine runs it.
    changes = {
        "rate_limit_api": parse_rate("6/min burst 3"),
        "redis_url": private_redis.url,
        "redis_key_prefix": "rl-test:",
    }
    with servers(settings, tmp_path, **changes) as (base,):
        wait_until(lambda: httpx.get(f"{base}/readyz").json()["redis"] == "up", 10.0, "redis not up")
        private_redis.pause()  # slow: connections open, nothing answers
        try:
            started = time.monotonic()
            codes = [personalization(base, key).status_code for _ in range(4)]
            assert time.monotonic() - started < 5.0  # each waited at most redis_timeout_ms (50 ms)
            assert codes == [200, 200, 200, 429]
        finally:
            private_redis.resume()
        private_redis.stop()  # down: refused connections
        assert personalization(base, key).status_code == 429  # still the same local bucket
        assert metric(base, 'opentime_rate_limit_local_only_total{scope="api"}') >= 5.0
        assert metric(base, 'opentime_rate_limited_total{scope="api"}') == 2.0


HAMMER = 1000
KINDS = ("list/picks.json", "html/picks", "img/banner.png", "view")


async def hammer(base: str, path: str, count: int) -> list[httpx.Response]:
    """``count`` requests for one URL, 50 at a time: one token opened over and over, as fast as possible."""
    gate = asyncio.Semaphore(50)
    limits = httpx.Limits(max_connections=50)
    async with httpx.AsyncClient(base_url=base, limits=limits, timeout=30) as client:

        async def one() -> httpx.Response:
            async with gate:
                return await client.get(path, headers={"AMP-Email-Sender": SENDER})

        return await asyncio.gather(*(one() for _ in range(count)))


def test_one_token_hammered_costs_at_most_one_store_read_per_recipient(
    settings: Settings, signer: TokenSigner, tmp_path: Path
) -> None:
    """Open-time URLs have no rate limit (mail proxies share addresses): what bounds one token being
    hammered is the cache of rendered bodies and of profiles, and one lookup per key for every request
    waiting on it. 1,000 rapid requests per kind (200 for an unknown recipient) must not each reach the
    store. (The web view used to read the store on every request: 1,000 reads.)"""
    known = signer.sign("demo", recipient_id(3), now=int(time.time()))
    ghost = signer.sign("demo", "nobody-by-that-id", now=int(time.time()))
    with servers(settings, tmp_path) as (base,):
        reads: dict[str, float] = {}
        for token, who in ((known, "known"), (ghost, "unknown")):
            for kind in KINDS:
                before = metric(base, "opentime_store_read_keys_total")
                answers = asyncio.run(hammer(base, f"/v1/{token}/{kind}", HAMMER if who == "known" else 200))
                reads[f"{who} {kind}"] = metric(base, "opentime_store_read_keys_total") - before
                assert {r.status_code for r in answers} == {200}, kind
                personal = [r for r in answers if "x-opentime-fallback" not in r.headers]
                if who == "known":  # a few may miss the budget while the first read runs
                    assert len(personal) >= 0.9 * HAMMER, kind
                else:
                    assert not personal
    # Lists and fragments share one rendered body; images and the view share one profile.
    assert reads == {
        "known list/picks.json": 1.0,
        "known html/picks": 0.0,
        "known img/banner.png": 1.0,
        "known view": 0.0,
        "unknown list/picks.json": 1.0,
        "unknown html/picks": 0.0,
        "unknown img/banner.png": 1.0,
        "unknown view": 0.0,
    }
