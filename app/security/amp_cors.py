"""AMP-for-Email CORS: the sender allowlist, a pure decision function, and the answers CORS gives itself.

Both schemes are supported (see docs ``amp-email.md`` section 1):

* version 2: ``AMP-Email-Sender`` request header, answered with ``AMP-Email-Allow-Sender``;
* version 1: ``Origin`` header plus ``__amp_source_origin`` query parameter, answered with the
  ``Access-Control-*`` / ``AMP-Access-Control-Allow-Source-Origin`` headers.

A rejected request gets a bare 403 before anything else runs (``answered_here``; the open-time
pipeline checks CORS first on the routes that need it): for amp-form this is the CSRF guard.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal
from urllib.parse import parse_qsl, urlsplit

from starlette.types import Send

from app.content.cache_policy import NO_STORE_HEADER

Headers = list[tuple[bytes, bytes]]

_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")
_DOMAIN_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789-.")
# Characters that only appear in quoted/commented/listed addresses; a value holding one is not a single
# plain sender, and echoing it back could authorise something the allowlist never named.
_LOCAL_FORBIDDEN = frozenset(' \t"(),:;<>[]\\@')
_URL_PREFIXES = ("https://", "http://")
_VISIBLE_ASCII = bytes(range(0x20, 0x7F))

_SOURCE_PARAM = "__amp_source_origin"
_ALLOW_SENDER = b"amp-email-allow-sender"
_ALLOW_ORIGIN = b"access-control-allow-origin"
_ALLOW_SOURCE = b"amp-access-control-allow-source-origin"
_EXPOSE = (b"access-control-expose-headers", b"AMP-Access-Control-Allow-Source-Origin")
_CREDENTIALS = (b"access-control-allow-credentials", b"true")
_PREFLIGHT_V1 = [
    (b"access-control-allow-methods", b"GET, POST, OPTIONS"),
    (b"access-control-allow-headers", b"Content-Type"),
]
_NO_STORE = NO_STORE_HEADER


def _is_domain(domain: str) -> bool:
    labels = domain.split(".")
    return len(labels) >= 2 and all(_LABEL.fullmatch(label) for label in labels)


def _plain_domain(domain: str) -> bool:
    """Cheap syntax check for a sender's domain (no regex: runs once per distinct sender)."""
    return bool(domain) and _DOMAIN_CHARS.issuperset(domain) and "" not in domain.split(".")


def _plain_local(local: str) -> bool:
    return bool(local) and local.isascii() and local.isprintable() and _LOCAL_FORBIDDEN.isdisjoint(local)


class SenderPolicy:
    """Allowlist of email senders that AMP endpoints answer for.

    Entries (case-insensitive):

    * ``news@example.com``: that exact address;
    * ``*@example.com`` or ``@example.com``: any sender at that domain;
    * ``*@*.example.com``: any sender at any subdomain of it (not the apex);
    * ``https://amp.example.com``: that exact origin, for clients that put a URL in ``__amp_source_origin``;
    * ``*``: any syntactically plain sender (discouraged).

    Invalid entries raise ``ValueError`` at construction. Decisions are memoised in a bounded dict.
    """

    def __init__(self, entries: Iterable[str], *, cache_size: int = 4096) -> None:
        self._allow_any = False
        self._addresses: set[str] = set()
        self._domains: set[str] = set()
        self._origins: set[str] = set()
        suffixes: list[str] = []
        for raw in entries:
            self._add(raw, suffixes)
        self._suffixes = tuple(suffixes)
        self._cache: dict[str, bool] = {}
        self._cache_size = cache_size

    def _add(self, raw: str, suffixes: list[str]) -> None:
        entry = raw.strip().lower()
        if entry == "*":
            self._allow_any = True
        elif entry.startswith(_URL_PREFIXES):
            self._origins.add(_parse_origin(raw, entry))
        elif entry.count("@") == 1:
            self._add_address(raw, entry, suffixes)
        else:
            raise ValueError(
                f"invalid AMP sender allowlist entry {raw!r}: expected name@domain, *@domain, "
                "*@*.domain, an https:// origin or *"
            )

    def _add_address(self, raw: str, entry: str, suffixes: list[str]) -> None:
        local, _, domain = entry.partition("@")
        wildcard_sub = local in ("*", "") and domain.startswith("*.")
        bare = domain[2:] if wildcard_sub else domain
        if not _is_domain(bare):
            raise ValueError(f"invalid AMP sender allowlist entry {raw!r}: bad domain {bare!r}")
        if wildcard_sub:
            suffixes.append("." + bare)
        elif local in ("*", ""):
            self._domains.add(bare)
        elif "*" in local or not _plain_local(local):
            raise ValueError(f"invalid AMP sender allowlist entry {raw!r}: bad local part {local!r}")
        else:
            self._addresses.add(entry)

    def allows(self, sender: str) -> bool:
        """Whether ``sender`` (an address or, for version-1 clients, an origin URL) is allowed."""
        cached = self._cache.get(sender)
        if cached is None:
            cached = self._compute(sender)
            if len(self._cache) >= self._cache_size:
                # Distinct senders are attacker-controlled: bound memory; recomputing is cheap.
                self._cache.clear()
            self._cache[sender] = cached
        return cached

    def _compute(self, sender: str) -> bool:
        # Check before lower(): some non-ASCII letters fold to ASCII ("\u212a".lower() == "k").
        if not sender.isascii():
            return False
        value = sender.lower()
        if value.startswith(_URL_PREFIXES):
            if not value.isprintable() or " " in value:
                return False
            return self._allow_any or value.removesuffix("/") in self._origins
        local, at, domain = value.rpartition("@")
        if not (at and _plain_local(local) and _plain_domain(domain)):
            return False
        return (
            self._allow_any
            or value in self._addresses
            or domain in self._domains
            or domain.endswith(self._suffixes)
        )


def _parse_origin(raw: str, entry: str) -> str:
    try:
        parts = urlsplit(entry)
        parts.port  # noqa: B018 - raises ValueError on a malformed port
    except ValueError as exc:
        raise ValueError(f"invalid AMP sender allowlist entry {raw!r}: {exc}") from None
    host = parts.hostname or ""
    if parts.username is not None or parts.query or parts.fragment or parts.path not in ("", "/"):
        raise ValueError(f"invalid AMP sender allowlist entry {raw!r}: an origin has no path, query or user")
    if host != "localhost" and not _is_domain(host):
        raise ValueError(f"invalid AMP sender allowlist entry {raw!r}: bad host {host!r}")
    return f"{parts.scheme}://{parts.netloc}"


@dataclass(slots=True)
class CorsDecision:
    """Outcome of the AMP CORS check: headers to add when ``allowed``; ``version`` 0 if none applied."""

    allowed: bool
    response_headers: Headers
    version: Literal[0, 1, 2]


# Shared by every rejection; its list is never mutated.
_REJECTED = CorsDecision(False, [], 0)


def decide(
    method: str, headers: Iterable[tuple[bytes, bytes]], query_string: bytes, policy: SenderPolicy
) -> CorsDecision:
    """Decide an AMP email CORS request. Version 2 wins over version 1; anything ambiguous is rejected."""
    sender: bytes | None = None
    origin: bytes | None = None
    senders = origins = 0
    for name, value in headers:
        key = name.lower()
        if key == b"amp-email-sender":
            sender, senders = value, senders + 1
        elif key == b"origin":
            origin, origins = value, origins + 1
    if sender is not None:
        return _decide_v2(sender, senders, policy)
    if origin is None or origins > 1:
        return _REJECTED
    return _decide_v1(method, origin, query_string, policy)


def _decide_v2(sender: bytes, count: int, policy: SenderPolicy) -> CorsDecision:
    # latin-1 maps bytes 1:1, and allows() rejects anything non-ASCII, so echoing raw bytes is safe.
    if count > 1 or not policy.allows(sender.decode("latin-1")):
        return _REJECTED
    return CorsDecision(True, [(_ALLOW_SENDER, sender)], 2)


def _decide_v1(method: str, origin: bytes, query_string: bytes, policy: SenderPolicy) -> CorsDecision:
    source = _source_origin(query_string)
    # Origin proves nothing (Gmail, Yahoo's "null"), but it is echoed, so it must be a clean header value.
    if source is None or not origin or origin.translate(None, _VISIBLE_ASCII) or not policy.allows(source):
        return _REJECTED
    headers = [(_ALLOW_ORIGIN, origin), (_ALLOW_SOURCE, source.encode("ascii")), _EXPOSE, _CREDENTIALS]
    if method == "OPTIONS":
        headers += _PREFLIGHT_V1
    return CorsDecision(True, headers, 1)


def _source_origin(query_string: bytes) -> str | None:
    """The single non-empty ``__amp_source_origin`` value, or None (absent, repeated, empty, undecodable)."""
    try:
        pairs = parse_qsl(query_string.decode("ascii"), keep_blank_values=True, errors="strict")
    except ValueError:  # UnicodeDecodeError included
        return None
    values = [value for key, value in pairs if key == _SOURCE_PARAM]
    return values[0] if len(values) == 1 and values[0] else None


async def answered_here(send: Send, method: str, decision: CorsDecision) -> bool:
    """Answer what CORS answers itself (a rejection: 403, no body; a preflight: 204); True if it did."""
    if not decision.allowed:
        await _respond(send, 403, [(b"content-length", b"0"), _NO_STORE])
        return True
    if method == "OPTIONS":
        await _respond(send, 204, [*decision.response_headers, _NO_STORE])
        return True
    return False


async def _respond(send: Send, status: int, headers: Headers) -> None:
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": b""})
