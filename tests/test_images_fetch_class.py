"""Fetch classification (pure): who fetched an image, from User-Agent, address and time since sending."""

from __future__ import annotations

import pytest

from app.open_time.fetch_class import SEEN_LIMIT, FetchClassifier

GMAIL_UA = "Mozilla/5.0 (Windows NT 5.1; rv:11.0) Gecko Firefox/11.0 (via ggpht.com GoogleImageProxy)"
YAHOO_UA = "YahooMailProxy; https://help.yahoo.com/kb/yahoo-mail-proxy-SLN28749.html"
SAFARI_UA = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko)"
CHROME_UA = (
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0 Safari/537.36"
)


@pytest.mark.parametrize(
    ("user_agent", "address", "since", "expected"),
    [
        (GMAIL_UA, "66.249.84.10", 3600.0, "gmail-proxy"),
        (GMAIL_UA, "203.0.113.9", 5.0, "gmail-proxy"),  # the UA alone is enough
        (None, "66.249.84.10", 3600.0, "gmail-proxy"),  # stripped UA from Google's proxy range
        (YAHOO_UA, "98.136.0.1", 3600.0, "yahoo-proxy"),
        ("Mozilla/5.0", "17.58.1.2", 86400.0, "apple-mpp"),  # Apple range, any time
        ("Mozilla/5.0", "203.0.113.9", 30.0, "apple-mpp"),  # generic UA right after sending
        ("", "::ffff:17.1.2.3", None, "apple-mpp"),  # IPv4-mapped address
        ("Mozilla/5.0", "203.0.113.9", 86400.0, "other-proxy"),  # generic UA, long after sending
        ("Mozilla/5.0 (compatible; Barracuda Sentinel)", "203.0.113.9", 3.0, "scanner"),
        ("python-requests/2.32", "203.0.113.9", 3600.0, "scanner"),
        (CHROME_UA, "40.107.1.1", 2.0, "scanner"),  # Exchange Online Protection detonation range
        ("Outlook-iOS/709.2226530.prod.iphone", "203.0.113.9", 3600.0, "other-proxy"),
        (SAFARI_UA, "203.0.113.9", 3600.0, "direct"),
        (CHROME_UA, "not-an-ip", None, "direct"),
        (CHROME_UA, None, None, "direct"),
    ],
)
def test_classification_table(
    user_agent: str | None, address: str | None, since: float | None, expected: str
) -> None:
    assert FetchClassifier().classify(user_agent, address, since) == expected


def test_ranges_and_window_are_configurable() -> None:
    classifier = FetchClassifier(
        google_ranges=(),
        apple_ranges=("2001:db8::/32",),
        other_proxy_ranges=("198.51.100.0/24",),
        prefetch_window_seconds=0,
    )
    assert classifier.classify(None, "66.249.84.10", 3600.0) == "other-proxy"
    assert classifier.classify(None, "2001:db8::1", 3600.0) == "apple-mpp"
    assert classifier.classify("Mozilla/5.0", "203.0.113.9", 30.0) == "other-proxy"
    assert classifier.classify(CHROME_UA, "198.51.100.7", 30.0) == "other-proxy"


def test_one_classifier_answers_the_whole_table_twice() -> None:
    """What a User-Agent and an address say is remembered; the time since sending is read every time."""
    classifier = FetchClassifier()
    rows = [
        ("Mozilla/5.0", "203.0.113.9", 30.0, "apple-mpp"),
        ("Mozilla/5.0", "203.0.113.9", 86400.0, "other-proxy"),
        ("Mozilla/5.0", "203.0.113.9", None, "other-proxy"),
        ("Mozilla/5.0", "203.0.113.9", 5.0, "apple-mpp"),
        ("Mozilla/5.0", "17.58.1.2", 86400.0, "apple-mpp"),
        (None, "66.249.84.10", 10.0, "gmail-proxy"),
        (SAFARI_UA, "203.0.113.9", 10.0, "direct"),
        ("python-requests/2.32", "203.0.113.9", 10.0, "scanner"),
    ]
    for _ in range(2):
        assert [classifier.classify(ua, ip, since) for ua, ip, since, _ in rows] == [row[3] for row in rows]


def test_the_remembered_table_is_bounded() -> None:
    classifier = FetchClassifier()
    for n in range(SEEN_LIMIT + 10):
        assert classifier.classify(f"agent-{n}", "203.0.113.9", None) == "direct"
    assert classifier.classify("Mozilla/5.0", "203.0.113.9", 30.0) == "apple-mpp"
    assert len(classifier._seen) <= SEEN_LIMIT
