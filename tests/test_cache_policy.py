"""The cache header policy per response kind (design.md section 6), ETag matching."""

from __future__ import annotations

import pytest

from app.content.cache_policy import NO_CACHE, CachePolicy, etag_for, not_modified

SECRET = b"k" * 32


def as_dict(headers: list[tuple[bytes, bytes]]) -> dict[str, str]:
    return {k.decode(): v.decode() for k, v in headers}


def test_personal_image_no_cache_for_clients_short_ttl_for_cdn() -> None:
    headers = as_dict(CachePolicy(SECRET).image("ada@example.com", "demo"))
    assert headers["cache-control"] == NO_CACHE.decode()
    assert headers["cdn-cache-control"] == "max-age=30, stale-if-error=86400"
    assert headers["surrogate-control"] == headers["cdn-cache-control"]
    recipient_key, campaign_key = headers["surrogate-key"].split()
    assert campaign_key == "c-demo"
    # Purge keys must not leak the recipient: a keyed hash, stable per secret, different across secrets.
    assert recipient_key.startswith("r-") and "ada" not in recipient_key
    assert recipient_key == CachePolicy(SECRET).surrogate_key("ada@example.com")
    assert recipient_key != CachePolicy(b"x" * 32).surrogate_key("ada@example.com")


def test_shared_image_cacheable_by_cdn_for_the_time_given() -> None:
    headers = as_dict(CachePolicy(SECRET).shared_image("demo", shared_until=17.9))
    assert headers["cache-control"] == NO_CACHE.decode()
    assert headers["cdn-cache-control"].startswith("max-age=17,")
    assert headers["surrogate-key"] == "c-demo"


def test_live_timer_lives_one_second_in_the_cdn_and_never_stale() -> None:
    policy = CachePolicy(SECRET)
    shared = as_dict(policy.live_timer("demo", None))
    assert shared["cache-control"] == NO_CACHE.decode()
    assert shared["cdn-cache-control"] == shared["surrogate-control"] == "max-age=1"
    assert shared["surrogate-key"] == "c-demo"
    personal = as_dict(policy.live_timer("demo", "ada@example.com"))
    assert personal["cdn-cache-control"] == "max-age=1"
    assert personal["surrogate-key"] == f"{policy.surrogate_key('ada@example.com')} c-demo"


def test_fallback_very_short_and_other_kinds() -> None:
    policy = CachePolicy(SECRET, fallback_cdn_ttl_seconds=3)
    fallback = as_dict(policy.fallback_image())
    assert fallback["cache-control"] == NO_CACHE.decode()
    assert fallback["cdn-cache-control"] == "max-age=3"
    assert "surrogate-key" not in fallback
    assert as_dict(policy.headers("amp-json")) == {"cache-control": "private, no-store"}
    assert as_dict(policy.headers("no-store")) == {"cache-control": "no-store"}
    with pytest.raises(ValueError, match="arguments"):
        policy.headers("image")


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, False),
        (b"", False),
        (b'"abc"', True),
        (b'W/"abc"', True),
        (b'"x", "abc"', True),
        (b"*", True),
        (b'"abcd"', False),
    ],
)
def test_if_none_match(header: bytes | None, expected: bool) -> None:
    assert not_modified(header, etag_for("abc")) is expected
