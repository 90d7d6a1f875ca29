"""Who fetched an image: a direct open, a mail provider's image proxy, Apple's prefetch or a scanner (pure).

An image fetch is not an open: Gmail and Yahoo fetch through proxies, Apple Mail Privacy Protection
prefetches at delivery through relays that strip the User-Agent, and security gateways fetch every
link and image seconds after delivery. The class is decided from the User-Agent first (the proxies
that name themselves), then the client address against configurable ranges, then the time since the
token was issued (which is the send time). The address is ``scope["client"]``: uvicorn's proxy-headers
middleware has already replaced it with the forwarded address when the peer is trusted.

The default ranges are data, not logic: operators replace them from published lists as they change.

What a User-Agent and an address say is remembered (a bounded table): the same proxies and clients
fetch again and again, and parsing an address and testing it against every range cost more than the
rest of a cached image's answer. Only the time since sending is looked at anew each time.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from typing import Literal

FetchClass = Literal["direct", "gmail-proxy", "apple-mpp", "yahoo-proxy", "other-proxy", "scanner"]
FETCH_CLASSES: tuple[FetchClass, ...] = (
    "direct",
    "gmail-proxy",
    "apple-mpp",
    "yahoo-proxy",
    "other-proxy",
    "scanner",
)

# Egress of Google's image proxy (googleusercontent.com fetchers), as commonly observed.
GOOGLE_PROXY_RANGES = (
    "66.249.80.0/20",
    "66.102.0.0/20",
    "64.233.160.0/19",
    "74.125.0.0/16",
    "72.14.192.0/18",
)
# Apple owns 17.0.0.0/8; Mail Privacy Protection relays fetch from there (and from partner CDNs).
APPLE_RANGES = ("17.0.0.0/8",)
# Exchange Online Protection outbound (Safe Links and attachment detonation fetch from these).
SCANNER_RANGES = ("40.92.0.0/15", "40.107.0.0/16", "52.100.0.0/14", "104.47.0.0/17")
SCANNER_AGENTS = (
    "barracuda",
    "mimecast",
    "proofpoint",
    "symantec",
    "trend micro",
    "forcepoint",
    "bot",
    "spider",
    "crawler",
    "scanner",
    "headlesschrome",
    "python-requests",
    "python-urllib",
    "go-http-client",
    "curl/",
    "wget/",
    "java/",
    "okhttp",
)
OTHER_PROXY_AGENTS = ("proxy", "via ", "ms-office", "outlook-ios", "outlook-android")
# What Apple's relays send instead of the client's real User-Agent.
GENERIC_AGENTS = frozenset({"", "mozilla/5.0", "mozilla/5.0 (macintosh)"})
PREFETCH_WINDOW_SECONDS = 600.0
SEEN_LIMIT = 4096  # (User-Agent, address) pairs remembered; cleared when full

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class FetchClassifier:
    """Classifies one fetch; every list is a constructor argument with the defaults above."""

    def __init__(
        self,
        *,
        google_ranges: Iterable[str] = GOOGLE_PROXY_RANGES,
        apple_ranges: Iterable[str] = APPLE_RANGES,
        scanner_ranges: Iterable[str] = SCANNER_RANGES,
        other_proxy_ranges: Iterable[str] = (),
        prefetch_window_seconds: float = PREFETCH_WINDOW_SECONDS,
    ) -> None:
        self._google = _networks(google_ranges)
        self._apple = _networks(apple_ranges)
        self._scanner = _networks(scanner_ranges)
        self._other = _networks(other_proxy_ranges)
        self._window = prefetch_window_seconds
        # None: a relay of unknown owner, Apple's if it fetches right after sending.
        self._seen: dict[tuple[str | None, str | None], FetchClass | None] = {}

    def classify(self, user_agent: str | None, address: str | None, since_issued: float | None) -> FetchClass:
        """``since_issued``: seconds from the token's issued_at to now (None for tokens without one)."""
        key = (user_agent, address)
        try:
            seen = self._seen[key]
        except KeyError:
            if len(self._seen) >= SEEN_LIMIT:
                self._seen.clear()
            seen = self._seen[key] = self._sender(user_agent, address)
        if seen is not None:
            return seen
        if since_issued is not None and 0 <= since_issued <= self._window:
            return "apple-mpp"
        return "other-proxy"

    def _sender(self, user_agent: str | None, address: str | None) -> FetchClass | None:
        """The class that User-Agent and address give, or None for a relay only the time can tell."""
        agent = (user_agent or "").strip().lower()
        ip = _address(address)
        if "googleimageproxy" in agent:
            return "gmail-proxy"
        if "yahoomailproxy" in agent:
            return "yahoo-proxy"
        if any(marker in agent for marker in SCANNER_AGENTS) or _within(ip, self._scanner):
            return "scanner"
        if any(marker in agent for marker in OTHER_PROXY_AGENTS):
            return "other-proxy"
        if agent in GENERIC_AGENTS:  # no real User-Agent: a relay
            if _within(ip, self._google):
                return "gmail-proxy"
            return "apple-mpp" if _within(ip, self._apple) else None
        return "other-proxy" if _within(ip, self._other) else "direct"


def _networks(ranges: Iterable[str]) -> tuple[Network, ...]:
    return tuple(ipaddress.ip_network(r, strict=False) for r in ranges)


def _address(text: str | None) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    if not text:
        return None
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def _within(ip: ipaddress.IPv4Address | ipaddress.IPv6Address | None, networks: tuple[Network, ...]) -> bool:
    return ip is not None and any(ip.version == n.version and ip in n for n in networks)
