"""API keys for ``/api/``: format, scopes, storage through the ``ApiKeyRepository`` and authentication.

A key is shown once, at creation, as ``otk_<key_id>_<secret>``: ``key_id`` is 8 lowercase hex
characters and is not secret (it names the key in listings and logs, like a user name); ``secret``
is 32 random bytes, base64url without padding (43 characters, which may themselves contain ``_``).
Only SHA-256 of the secret is stored.

Authentication goes in named steps, each with its own failure::

    ApiKeyError
     ├── MissingKey     no key presented
     ├── MalformedKey   not shaped like ``otk_<key_id>_<secret>``
     ├── UnknownKey     no key with that id
     ├── BadSecret      the id exists but the secret does not match
     └── RevokedKey     the secret matches but the key was revoked

Successful lookups are cached in process (``ApiKeyCache``) for ``ttl_seconds`` (30 s) counted
from the database read, never extended by hits: a key revoked with ``opentime apikeys revoke``
(another process) stops working in every server within that TTL.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
import time
import unicodedata
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from app.content.cache import ENTRY_OVERHEAD, BoundedCache
from app.errors import OpentimeError
from app.store.base import ApiKeyRecord, ApiKeyRepository

PREFIX = "otk"
ADMIN = "admin"
# Every scope an endpoint may require; ``admin`` implies all the others.
ERASE, EXPORT = "customers:erase", "customers:export"  # privacy requests (app.routes.privacy)
REPORTS = "reports:read"  # campaign reports (app.routes.reports)
SCOPES = frozenset({"render", "personalization:read", "preview", "tokens", ERASE, EXPORT, REPORTS, ADMIN})
MAX_NAME_CHARS = 100
DEFAULT_CACHE_TTL_SECONDS = 30.0
DEFAULT_CACHE_ENTRIES = 1024

_SECRET_BYTES = 32
_KEY_RE = re.compile(r"otk_([0-9a-f]{8})_([A-Za-z0-9_-]{43})")
_MAX_PRESENTED_CHARS = 64


class ApiKeyError(OpentimeError):
    """The presented API key does not authenticate; subclasses say why."""


class MissingKey(ApiKeyError):
    pass


class MalformedKey(ApiKeyError):
    pass


class UnknownKey(ApiKeyError):
    pass


class BadSecret(ApiKeyError):
    pass


class RevokedKey(ApiKeyError):
    pass


@dataclass(frozen=True, slots=True)
class ApiKey:
    """One key's record, without its secret hash."""

    key_id: str
    name: str
    scopes: frozenset[str]
    created_at: float
    revoked_at: float | None = None

    @property
    def revoked(self) -> bool:
        return self.revoked_at is not None

    def allows(self, scope: str) -> bool:
        return ADMIN in self.scopes or scope in self.scopes


@dataclass(frozen=True, slots=True)
class _Stored:
    key: ApiKey
    secret_hash: bytes


class ApiKeyCache:
    """Recently authenticated keys by id, so API calls don't read the store every time.

    Entries hold the record and the secret hash (the secret is checked on every hit) and expire
    ``ttl_seconds`` after the read that filled them, so revocations from other processes apply
    within that time. Used from the event loop only.
    """

    def __init__(
        self,
        *,
        ttl_seconds: float = DEFAULT_CACHE_TTL_SECONDS,
        max_entries: int = DEFAULT_CACHE_ENTRIES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ttl_seconds = ttl_seconds
        # Every entry is given the same size, so the byte cap is an entry cap.
        self._entries: BoundedCache[str, _Stored] = BoundedCache(
            max_entries * (ENTRY_OVERHEAD + 1), size_of=lambda _: 1, clock=clock
        )

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key_id: str) -> _Stored | None:
        return self._entries.get(key_id)

    def put(self, stored: _Stored) -> None:
        self._entries.set(stored.key.key_id, stored, self.ttl_seconds)

    def discard(self, key_id: str) -> None:
        self._entries.discard(key_id)


# -- pure parts ------------------------------------------------------------------------------------


def check_scopes(scopes: Iterable[str]) -> frozenset[str]:
    wanted = frozenset(scopes)
    unknown = wanted - SCOPES
    if unknown:
        raise ValueError(f"unknown scope(s) {', '.join(sorted(unknown))}; valid: {', '.join(sorted(SCOPES))}")
    if not wanted:
        raise ValueError(f"give at least one scope; valid: {', '.join(sorted(SCOPES))}")
    return wanted


def check_name(name: str) -> str:
    name = name.strip()
    if not 1 <= len(name) <= MAX_NAME_CHARS:
        raise ValueError(f"key name must be 1 to {MAX_NAME_CHARS} characters")
    if any(unicodedata.category(char).startswith("C") for char in name):
        raise ValueError("key name must not contain control or format characters")
    return name


def parse_key(presented: str) -> tuple[str, str]:
    """Split ``otk_<key_id>_<secret>`` into ``(key_id, secret)``."""
    if not presented:
        raise MissingKey("no API key")
    match = _KEY_RE.fullmatch(presented) if len(presented) <= _MAX_PRESENTED_CHARS else None
    if match is None:
        raise MalformedKey("API key is not of the form otk_<key id>_<secret>")
    return match[1], match[2]


def hash_secret(secret: str) -> bytes:
    # The secret is 256 random bits, so nobody can brute-force it from its hash: a slow password hash
    # (scrypt, argon2) would add nothing but CPU on every uncached API call.
    return hashlib.sha256(secret.encode("ascii")).digest()


def new_secret() -> str:
    return base64.urlsafe_b64encode(secrets.token_bytes(_SECRET_BYTES)).rstrip(b"=").decode("ascii")


def format_key(key_id: str, secret: str) -> str:
    return f"{PREFIX}_{key_id}_{secret}"


# -- storage ---------------------------------------------------------------------------------------


async def create_key(
    keys: ApiKeyRepository, name: str, scopes: Iterable[str], now: float
) -> tuple[ApiKey, str]:
    """Store a new key and return its record and the plaintext key (shown once, never stored)."""
    name, wanted = check_name(name), check_scopes(scopes)
    secret = new_secret()
    # 32-bit ids collide now and then over many keys: draw again instead of failing.
    while True:
        record = ApiKeyRecord(secrets.token_hex(4), name, wanted, now, None, hash_secret(secret))
        if await keys.insert(record):
            return record_key(record), format_key(record.key_id, secret)


async def list_keys(keys: ApiKeyRepository) -> list[ApiKey]:
    return [record_key(record) for record in await keys.all()]


async def revoke_key(
    keys: ApiKeyRepository, key_id: str, now: float, *, cache: ApiKeyCache | None = None
) -> ApiKey:
    """Revoke a key (idempotent: a revoked key keeps its first ``revoked_at``)."""
    record = await keys.revoke(key_id, now)
    if record is None:
        raise UnknownKey(f"no API key {key_id!r}")
    if cache is not None:
        cache.discard(key_id)
    return record_key(record)


async def authenticate(keys: ApiKeyRepository, presented: str, *, cache: ApiKeyCache | None = None) -> ApiKey:
    """Return the key for ``presented`` or raise the ``ApiKeyError`` that says why not."""
    key_id, secret = parse_key(presented)
    digest = hash_secret(secret)
    cached = cache.get(key_id) if cache is not None else None
    stored = cached or _stored(await keys.find(key_id))
    if stored is None:
        raise UnknownKey(f"no API key {key_id}")
    if not hmac.compare_digest(stored.secret_hash, digest):
        raise BadSecret(f"wrong secret for API key {key_id}")
    # Checked after the secret, so only the key's holder learns that it was revoked.
    if stored.key.revoked:
        raise RevokedKey(f"API key {key_id} was revoked")
    if cache is not None and cached is None:  # a hit must not extend the TTL
        cache.put(stored)
    return stored.key


def record_key(record: ApiKeyRecord) -> ApiKey:
    """The key a stored record describes, without its secret hash."""
    return ApiKey(record.key_id, record.name, record.scopes, record.created_at, record.revoked_at)


def _stored(record: ApiKeyRecord | None) -> _Stored | None:
    return None if record is None else _Stored(record_key(record), record.secret_hash)
