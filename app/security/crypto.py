"""Cryptographic primitives: key derivation, truncated HMAC and AES-GCM sealing.

This is the only module that imports `cryptography`; its exceptions never leave this module
(a failed unseal raises `SealError`).
"""

from __future__ import annotations

import hmac
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from app.errors import OpentimeError

__all__ = ["MacKey", "SealError", "Sealer", "derive_key", "mac", "macs_equal", "seal", "unseal"]

_DERIVE_PREFIX = b"opentime/v1/"
NONCE_SIZE = 12
TAG_SIZE = 16
SEAL_OVERHEAD = NONCE_SIZE + TAG_SIZE


class SealError(OpentimeError):
    """A sealed blob could not be opened: wrong key, wrong aad, truncated or tampered."""


def derive_key(secret: bytes, purpose: str) -> bytes:
    """Derive a 32-byte subkey so that each purpose (token, seal, esp/...) uses its own key."""
    return hmac.digest(secret, _DERIVE_PREFIX + purpose.encode(), "sha256")


def mac(key: bytes, msg: bytes, size: int = 16) -> bytes:
    """HMAC-SHA256 of `msg`, truncated to `size` bytes."""
    return hmac.digest(key, msg, "sha256")[:size]


class MacKey:
    """A precomputed HMAC-SHA256 key: same result as `mac`, without OpenSSL's per-call setup.

    With OpenSSL 3, `hmac.digest` spends most of its ~2.5 µs looking up the algorithm and keying the
    context; copying a keyed context instead costs about 1 µs. CPython's `hmac.HMAC` wraps OpenSSL's
    own HMAC object (`_hmac`), whose copy/update/digest are C calls; using it directly saves another
    third. Where a Python build lacks it, the pure-Python object has the same three methods.
    """

    __slots__ = ("_keyed",)

    def __init__(self, key: bytes) -> None:
        keyed = hmac.new(key, digestmod="sha256")
        self._keyed = getattr(keyed, "_hmac", None) or keyed

    def mac(self, msg: bytes | bytearray, size: int = 16) -> bytes:
        h = self._keyed.copy()
        h.update(msg)
        return h.digest()[:size]

    def __repr__(self) -> str:
        return "MacKey(<key hidden>)"


# Constant-time comparison; never compare MACs with `==`. The C function itself, not a wrapper: it
# runs on every open-time token check.
macs_equal = hmac.compare_digest


class Sealer:
    """AES-256-GCM with a random 96-bit nonce prepended to the ciphertext.

    Build one per key and reuse it: constructing the cipher costs about as much as a decryption.
    """

    __slots__ = ("_aead",)

    def __init__(self, key: bytes) -> None:
        if len(key) != 32:
            raise ValueError("seal key must be 32 bytes")
        self._aead = AESGCM(key)

    def seal(self, plaintext: bytes, aad: bytes, nonce: bytes | None = None) -> bytes:
        """With ``nonce``, the caller guarantees it never repeats for a different (plaintext, aad):
        e.g. a MAC of both (a synthetic nonce: the same input always seals to the same bytes)."""
        if nonce is None:
            nonce = os.urandom(NONCE_SIZE)
        elif len(nonce) != NONCE_SIZE:
            raise ValueError(f"nonce must be {NONCE_SIZE} bytes")
        return nonce + self._aead.encrypt(nonce, plaintext, aad)

    def unseal(self, blob: bytes, aad: bytes) -> bytes:
        if len(blob) < SEAL_OVERHEAD:
            raise SealError("sealed value is too short")
        try:
            return self._aead.decrypt(blob[:NONCE_SIZE], blob[NONCE_SIZE:], aad)
        except InvalidTag:
            raise SealError("sealed value failed authentication") from None

    def __repr__(self) -> str:
        return "Sealer(<key hidden>)"


def seal(key: bytes, plaintext: bytes, aad: bytes) -> bytes:
    return Sealer(key).seal(plaintext, aad)


def unseal(key: bytes, blob: bytes, aad: bytes) -> bytes:
    return Sealer(key).unseal(blob, aad)
