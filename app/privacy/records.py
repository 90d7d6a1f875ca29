"""Erasure records without the personal data: the recipient id only as an HMAC under a store key.

The key is random, made by the first erasure and kept in the store (``store_secrets``), so every
process and ``opentime erase`` hash an id the same way and the records stay checkable after a key
ring rotation or ``opentime db copy``. Whoever can read the store can therefore test whether a
guessed id was erased, but nobody can list the ids that were.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets

from app.store.base import Erasure, PrivacyRepository

MAX_ID_CHARS = 200  # as webhook events and imports
KEY_BYTES = 32
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def check_id(value: str) -> str:
    """The recipient id as given, or ValueError when no store could hold it."""
    if not 1 <= len(value) <= MAX_ID_CHARS:
        raise ValueError(f"a recipient id is 1-{MAX_ID_CHARS} characters")
    if _CONTROL.search(value):
        raise ValueError("a recipient id has no control characters")
    return value


def id_hash(key: bytes, recipient_id: str) -> bytes:
    return hmac.new(key, recipient_id.encode("utf-8", "surrogatepass"), hashlib.sha256).digest()


def new_record(key: bytes, recipient_id: str, now: float, requested_by: str) -> Erasure:
    """A record with counts 0: the store fills in what it removed."""
    return Erasure(secrets.token_hex(8), id_hash(key, recipient_id), now, requested_by, 0, 0, 0)


class RecordKey:
    """The store's record key, read (or made) once per process."""

    def __init__(self, privacy: PrivacyRepository) -> None:
        self._privacy = privacy
        self._key: bytes | None = None

    async def get(self) -> bytes:
        if self._key is None:
            self._key = await self._privacy.record_key(secrets.token_bytes(KEY_BYTES))
        return self._key
