"""Webhook signatures: ``Opentime-Signature: t=<unix seconds>,v1=<hex>`` (Stripe-style).

``v1`` is HMAC-SHA256 of ``b"<t>." + raw body`` under one of the configured secrets, hex-encoded. A
header may carry several ``v1=`` values (a sender signing with old and new secret during a rotation);
any of them matching any configured secret is enough. Checks run in named steps with specific
failures: missing header, malformed header, timestamp outside the tolerance window, no matching
signature, and a request already seen (replay). Comparison is constant-time.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from app.errors import OpentimeError

HEADER = "opentime-signature"
SCHEME = "v1"
MAX_SIGNATURES = 8  # per header: bounds the work an unauthenticated request can cause
_HEX_DIGEST = re.compile(r"[0-9a-f]{64}")


class SignatureError(OpentimeError):
    """The request is not authentic; ``reason`` is a stable code for clients and logs."""

    reason = "bad-signature"


class MissingSignature(SignatureError):
    reason = "missing-signature"


class MalformedSignature(SignatureError):
    reason = "malformed-signature"


class StaleTimestamp(SignatureError):
    reason = "timestamp-outside-tolerance"


class BadSignature(SignatureError):
    reason = "bad-signature"


class ReplayedSignature(SignatureError):
    reason = "replayed"


@dataclass(frozen=True, slots=True)
class Verified:
    timestamp: int
    signature: str  # the v1 value that matched
    body_digest: str  # sha256 of the body: with ``timestamp``, what the replay guard remembers
    sender: str = ""  # the matching secret's fingerprint (``secret_id``): whose rate limit it counts in


def signature(secret: str, timestamp: int, body: bytes) -> str:
    message = str(timestamp).encode("ascii") + b"." + body
    return hmac.new(secret.encode("utf-8"), message, hashlib.sha256).hexdigest()


def secret_id(secret: str) -> str:
    """A name for a secret that does not reveal it (a hash under a label of its own): what identifies a
    sender in rate-limit keys (Redis) and logs."""
    return hashlib.sha256(b"opentime webhook sender\0" + secret.encode("utf-8")).hexdigest()[:16]


def sign_header(secrets: Sequence[str], timestamp: int, body: bytes) -> str:
    """The header value a sender sends: one ``v1`` per secret (several during a rotation)."""
    return ",".join([f"t={timestamp}", *(f"{SCHEME}={signature(s, timestamp, body)}" for s in secrets)])


def parse_header(value: str | None) -> tuple[int, list[str]]:
    if not value:
        raise MissingSignature(f"send the {HEADER} header: t=<unix seconds>,v1=<hex hmac-sha256>")
    timestamp: int | None = None
    candidates: list[str] = []
    for item in value.split(","):
        key, sep, text = item.strip().partition("=")
        if not sep:
            raise MalformedSignature("expected comma-separated key=value pairs")
        if key == "t":
            if timestamp is not None or not text.isascii() or not text.isdigit() or len(text) > 12:
                raise MalformedSignature("t must appear once, as whole unix seconds")
            timestamp = int(text)
        elif key == SCHEME:
            if not _HEX_DIGEST.fullmatch(text.lower()):
                raise MalformedSignature(f"{SCHEME} must be 64 hex digits (hmac-sha256)")
            candidates.append(text.lower())
        # Unknown schemes (v0, v2...) are ignored, so senders can add new ones first.
    if timestamp is None or not candidates:
        raise MalformedSignature(f"expected t=<unix seconds> and at least one {SCHEME}=<hex>")
    if len(candidates) > MAX_SIGNATURES:
        raise MalformedSignature(f"at most {MAX_SIGNATURES} {SCHEME} signatures")
    return timestamp, candidates


@dataclass(frozen=True, slots=True)
class SignedHeader:
    """A well-formed header with a fresh timestamp: what can be checked before the body is read."""

    timestamp: int
    candidates: list[str]


def check_header(header: str | None, *, now: float, tolerance: float) -> SignedHeader:
    """The header's form and timestamp; raises a ``SignatureError`` subclass. Needs no body, so a
    request without a plausible signature is refused before a byte of its body is read."""
    timestamp, candidates = parse_header(header)
    if abs(now - timestamp) > tolerance:
        raise StaleTimestamp(f"timestamp is more than {tolerance:g} s from the server clock")
    return SignedHeader(timestamp, candidates)


def check_body(signed: SignedHeader, body: bytes, secrets: Sequence[str]) -> Verified:
    """Does a ``v1`` value match ``body`` under a secret? Raises ``BadSignature`` if none does."""
    expected = [signature(secret, signed.timestamp, body) for secret in secrets]
    for candidate in signed.candidates:
        # Every expected value is compared (no early exit on the secret that matched first).
        matched = [hmac.compare_digest(candidate.encode("ascii"), e.encode("ascii")) for e in expected]
        if any(matched):
            sender = secret_id(secrets[matched.index(True)])
            return Verified(signed.timestamp, candidate, hashlib.sha256(body).hexdigest(), sender)
    raise BadSignature("no signature matches the body with a configured secret")


def verify(
    header: str | None, body: bytes, secrets: Sequence[str], *, now: float, tolerance: float
) -> Verified:
    """Check the header against every secret; raises a ``SignatureError`` subclass."""
    return check_body(check_header(header, now=now, tolerance=tolerance), body, secrets)


class RequestMemory(Protocol):
    """What the webhook route asks of a replay guard: this process's ``ReplayGuard``, or the one all
    nodes share (``app.shared.replay.SharedReplayGuard``, with ``redis_url``)."""

    async def admit(self, verified: Verified, now: float) -> None:
        """Remember ``verified``, or raise ``ReplayedSignature`` if it was accepted before."""
        ...

    async def release(self, verified: Verified) -> None:
        """Forget ``verified``: it was not acknowledged, so its sender may retry it."""
        ...


class ReplayGuard:
    """Remembers accepted requests until they leave the tolerance window, at most ``capacity``.

    A request is known by its timestamp and the sha256 of its body, not by a signature: a header may
    carry several valid ``v1`` values (one per secret), and any of them, alone or reordered, would
    replay the same request. When full, the oldest entries go first: a flood can push out memory of
    old requests, which event-id idempotency then still catches.
    """

    def __init__(self, tolerance: float, capacity: int = 100_000) -> None:
        self._tolerance = tolerance
        self._capacity = capacity
        self._seen: OrderedDict[tuple[int, str], float] = OrderedDict()  # -> when it leaves the window

    def __len__(self) -> int:
        return len(self._seen)

    def check(self, verified: Verified, now: float) -> None:
        """Remember ``verified`` or raise ``ReplayedSignature`` if it was seen in the window."""
        self._expire(now)
        key = (verified.timestamp, verified.body_digest)
        if key in self._seen:
            raise ReplayedSignature("this request was already received; sign each request anew")
        self._seen[key] = verified.timestamp + self._tolerance
        while len(self._seen) > self._capacity:
            self._seen.popitem(last=False)

    def forget(self, verified: Verified) -> None:
        """Allow a retry of a request that was not acknowledged (e.g. the store was down)."""
        self._seen.pop((verified.timestamp, verified.body_digest), None)

    async def admit(self, verified: Verified, now: float) -> None:
        self.check(verified, now)

    async def release(self, verified: Verified) -> None:
        self.forget(verified)

    def _expire(self, now: float) -> None:
        # Arrival order is close to expiry order; an out-of-order entry just lives a little longer.
        while self._seen:
            key, expires = next(iter(self._seen.items()))
            if expires >= now:
                return
            del self._seen[key]
