import hashlib
import hmac

import pytest

from app.security import crypto

KEY = bytes(range(32))


def test_derive_key_is_hmac_of_prefixed_purpose() -> None:
    expected = hmac.new(KEY, b"opentime/v1/token", hashlib.sha256).digest()
    assert crypto.derive_key(KEY, "token") == expected
    assert len(expected) == 32


def test_derive_key_separates_purposes_and_secrets() -> None:
    keys = {crypto.derive_key(KEY, "token"), crypto.derive_key(KEY, "seal"), crypto.derive_key(KEY, "esp/x")}
    assert len(keys) == 3
    assert crypto.derive_key(KEY, "token") != crypto.derive_key(bytes(32), "token")


def test_mac_is_truncated_hmac_sha256() -> None:
    full = hmac.new(KEY, b"message", hashlib.sha256).digest()
    assert crypto.mac(KEY, b"message") == full[:16]
    assert crypto.mac(KEY, b"message", size=32) == full


@pytest.mark.parametrize("key", [b"", b"k", KEY, bytes(64), bytes(100)])
@pytest.mark.parametrize("msg", [b"", b"x", bytes(1000)])
def test_mac_key_matches_mac(key: bytes, msg: bytes) -> None:
    mac_key = crypto.MacKey(key)
    assert mac_key.mac(msg) == crypto.mac(key, msg)
    assert mac_key.mac(bytearray(msg), size=32) == crypto.mac(key, msg, size=32)
    assert mac_key.mac(msg) == mac_key.mac(msg)  # the precomputed state is not consumed


def test_macs_equal() -> None:
    assert crypto.macs_equal(b"abc", b"abc")
    assert not crypto.macs_equal(b"abc", b"abd")
    assert not crypto.macs_equal(b"abc", b"ab")


def test_seal_round_trip_uses_fresh_nonces() -> None:
    blob1 = crypto.seal(KEY, b"alice@example.com", b"campaign")
    blob2 = crypto.seal(KEY, b"alice@example.com", b"campaign")
    assert blob1 != blob2
    assert len(blob1) == len(b"alice@example.com") + crypto.SEAL_OVERHEAD
    assert b"alice" not in blob1
    assert crypto.unseal(KEY, blob1, b"campaign") == b"alice@example.com"
    assert crypto.Sealer(KEY).unseal(blob2, b"campaign") == b"alice@example.com"


def test_unseal_with_wrong_key_or_aad_raises_seal_error() -> None:
    blob = crypto.seal(KEY, b"secret", b"aad")
    with pytest.raises(crypto.SealError):
        crypto.unseal(bytes(32), blob, b"aad")
    with pytest.raises(crypto.SealError):
        crypto.unseal(KEY, blob, b"other")


def test_unseal_rejects_every_tampered_byte_and_truncation() -> None:
    # Only SealError may escape: a cryptography exception type leaking out would bypass our handlers.
    blob = crypto.seal(KEY, b"secret", b"aad")
    for i in range(len(blob)):
        tampered = blob[:i] + bytes([blob[i] ^ 0x01]) + blob[i + 1 :]
        with pytest.raises(crypto.SealError):
            crypto.unseal(KEY, tampered, b"aad")
    for n in range(len(blob)):
        with pytest.raises(crypto.SealError):
            crypto.unseal(KEY, blob[:n], b"aad")


def test_sealer_requires_a_256_bit_key_and_hides_it() -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        crypto.Sealer(b"short")
    assert KEY.hex() not in repr(crypto.Sealer(KEY))
    assert "hidden" in repr(crypto.MacKey(KEY))
