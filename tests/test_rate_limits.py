"""The rate-limit arithmetic (GCRA) and the in-process limiter, with an injected clock."""

from __future__ import annotations

import asyncio

import pytest

from app.limits.http import limit_headers, retry_seconds
from app.limits.limiter import RateLimited, RateLimiter
from app.limits.local import LocalBuckets
from app.limits.rate import OFF, Decision, Rate, decide, parse_rate


class Clock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def run(buckets: LocalBuckets, key: str, rate: Rate, now: float, count: int) -> list[Decision]:
    return [buckets.check(key, rate, now) for _ in range(count)]


def test_a_burst_passes_at_once_then_one_per_interval() -> None:
    rate = Rate(2.0, 5)  # 2/s, 5 at once
    buckets = LocalBuckets()
    first = run(buckets, "k", rate, 100.0, 6)
    assert [d.allowed for d in first] == [True] * 5 + [False]
    assert [d.remaining for d in first] == [4, 3, 2, 1, 0, 0]
    assert first[-1].retry_after == pytest.approx(0.5)  # one token back after 1/rate
    assert first[-1].reset == pytest.approx(2.5)  # 5 tokens back at 2/s
    assert not buckets.check("k", rate, 100.49).allowed
    assert buckets.check("k", rate, 100.5).allowed  # exactly on time gets through
    assert not buckets.check("k", rate, 100.5).allowed
    assert [d.allowed for d in run(buckets, "k", rate, 103.0, 6)] == [True] * 5 + [False]  # full again


def test_a_refused_request_costs_nothing() -> None:
    rate = Rate(1.0, 1)
    buckets = LocalBuckets()
    assert buckets.check("k", rate, 0.0).allowed
    for step in range(1, 10):  # a client hammering while refused does not push its retry further away
        decision = buckets.check("k", rate, step / 10)
        assert not decision.allowed and decision.retry_after == pytest.approx(1 - step / 10)
    assert buckets.check("k", rate, 1.0).allowed


def test_sustained_rate_is_the_configured_one() -> None:
    rate = Rate(10.0, 3)
    buckets = LocalBuckets()
    allowed = sum(buckets.check("k", rate, t / 1000).allowed for t in range(0, 10_000))  # every ms for 10 s
    assert allowed == 3 + 99  # the burst at 0 s, then one every 0.1 s from 0.1 s to 9.9 s


def test_keys_are_counted_apart() -> None:
    rate = Rate(1.0, 2)
    buckets = LocalBuckets()
    assert [d.allowed for d in run(buckets, "a", rate, 0.0, 3)] == [True, True, False]
    assert [d.allowed for d in run(buckets, "b", rate, 0.0, 3)] == [True, True, False]


def test_decide_is_pure() -> None:
    rate = Rate(4.0, 2)
    decision, tat = decide(None, 50.0, rate)
    assert decision.allowed and tat == pytest.approx(50.25)
    decision, tat = decide(50.25, 50.0, rate)
    assert decision.allowed and tat == pytest.approx(50.5)
    decision, tat = decide(50.5, 50.0, rate)
    assert not decision.allowed and tat is None and decision.retry_after == pytest.approx(0.25)
    decision, tat = decide(10.0, 50.0, rate)  # a TAT in the past is a full bucket
    assert decision.allowed and decision.remaining == 1 and tat == pytest.approx(50.25)


def test_the_table_of_buckets_is_bounded() -> None:
    rate = Rate(1.0, 1)
    buckets = LocalBuckets(max_keys=100)
    for i in range(1000):
        buckets.check(f"k{i}", rate, 0.0)
    assert len(buckets) <= 100
    assert not buckets.check("k999", rate, 0.0).allowed  # the most recent keys are kept


@pytest.mark.parametrize(
    ("text", "rate"),
    [
        ("100/s burst 200", Rate(100.0, 200)),
        ("100/s", Rate(100.0, 100)),  # burst: one second's worth
        ("0.5/s", Rate(0.5, 1)),
        ("30/min burst 5", Rate(0.5, 5)),
        ("30 / min", Rate(0.5, 1)),
        ("0", OFF),
        (0, OFF),
        ("off", OFF),
        ("0/s", OFF),
    ],
)
def test_rates_parse(text: object, rate: Rate) -> None:
    assert parse_rate(text) == rate


@pytest.mark.parametrize(
    "text", ["", "100", "fast", "100/h", "10/s burst 0", "10/s burst", "-1/s", True, 1.5]
)
def test_bad_rates_say_what_is_expected(text: object) -> None:
    with pytest.raises(ValueError, match=r"100/s burst 200|burst must be"):
        parse_rate(text)


def test_a_rate_reads_back_from_its_text() -> None:
    for rate in (Rate(200.0, 1000), Rate(0.5, 3), Rate(2.5, 4), OFF):
        assert parse_rate(str(rate)) == rate


def test_retry_after_is_whole_seconds_rounded_up() -> None:
    assert retry_seconds(Decision(False, 5, 0, 0.2, 2.0)) == 1
    assert retry_seconds(Decision(False, 5, 0, 1.0, 2.0)) == 1
    assert retry_seconds(Decision(False, 5, 0, 1.01, 2.0)) == 2
    headers = limit_headers(Decision(False, 5, 0, 1.01, 2.3))
    assert headers == {
        "ratelimit-limit": "5",
        "ratelimit-remaining": "0",
        "ratelimit-reset": "3",
        "retry-after": "2",
    }


def test_the_limiter_counts_per_scope_and_identity() -> None:
    clock = Clock()
    limiter = RateLimiter({"api": Rate(1.0, 2), "webhooks": OFF}, clock=clock)

    async def scenario() -> None:
        await limiter.admit("api", "key-a")
        await limiter.admit("api", "key-a")
        with pytest.raises(RateLimited) as refused:
            await limiter.admit("api", "key-a")
        assert refused.value.scope == "api" and refused.value.decision.retry_after == pytest.approx(1.0)
        await limiter.admit("api", "key-b")  # another key is unaffected
        for _ in range(100):
            await limiter.admit("webhooks", "secret")  # 0: no limit
            await limiter.admit("preview", "key-a")  # not configured: no limit
        clock.now += 1.0
        await limiter.admit("api", "key-a")  # recovered

    asyncio.run(scenario())
    assert limiter.limited == {"api": 1, "webhooks": 0, "preview": 0}
    assert not limiter.local_only  # no shared backend: nothing fell back


def test_unknown_scopes_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown rate limit scope"):
        RateLimiter({"everything": Rate(1.0, 1)})
