from __future__ import annotations

from app.content.cache import ENTRY_OVERHEAD, BoundedCache


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def make(max_entries: int, clock: Clock) -> BoundedCache[str, bytes]:
    return BoundedCache(max_entries * (ENTRY_OVERHEAD + 10), size_of=len, clock=clock)


def test_least_recently_used_is_evicted_at_the_byte_cap() -> None:
    cache = make(3, Clock())
    for key in "abc":
        cache.set(key, b"x" * 10, ttl=60)
    assert cache.get("a") == b"x" * 10  # a is now most recent
    cache.set("d", b"y" * 10, ttl=60)
    assert cache.get("b") is None
    assert [cache.get(k) is not None for k in "acd"] == [True, True, True]
    assert cache.stats.evictions == 1
    assert cache.bytes == 3 * (ENTRY_OVERHEAD + 10)


def test_entries_expire_after_their_ttl() -> None:
    clock = Clock()
    cache = make(3, clock)
    cache.set("a", b"1", ttl=5)
    clock.now += 4.9
    assert cache.get("a") == b"1"
    clock.now += 0.2
    assert cache.get("a") is None
    assert len(cache) == 0 and cache.bytes == 0


def test_replacing_and_discarding_keep_the_byte_count_right() -> None:
    cache = make(3, Clock())
    cache.set("a", b"12345", ttl=5)
    cache.set("a", b"1", ttl=5)
    assert cache.bytes == ENTRY_OVERHEAD + 1
    cache.discard("a")
    cache.discard("missing")
    assert cache.bytes == 0


def test_a_value_larger_than_the_cap_is_not_stored() -> None:
    cache = make(1, Clock())
    cache.set("big", b"x" * 10_000, ttl=5)
    assert cache.get("big") is None and cache.bytes == 0


def test_memory_stays_bounded_for_many_recipients() -> None:
    cache: BoundedCache[str, bytes] = BoundedCache(100_000, size_of=len)
    for index in range(50_000):
        cache.set(f"r{index}", b"x" * 500, ttl=60)
    assert cache.bytes <= 100_000
    assert len(cache) == 100_000 // (500 + ENTRY_OVERHEAD)
