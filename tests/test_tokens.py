import base64
import hashlib
import hmac
import string
from datetime import UTC, datetime, timedelta

import pytest

from app.security import crypto
from app.security.keyring import Key, KeyRing, new_keyring, remove, rotate
from app.security.tokens import (
    MAX_TOKEN_CHARS,
    Claims,
    TokenBadSignature,
    TokenError,
    TokenExpired,
    TokenMalformed,
    TokenNotYetValid,
    TokenSigner,
    TokenUnknownKey,
    TokenVerifier,
    esp_campaign_key,
)

NOW = 1_795_000_000
T0 = datetime(2026, 11, 29, 3, tzinfo=UTC)
KEY = Key(kid="a1b2c3", created=T0, secret=bytes(range(32)))
OTHER_KEY = Key(kid="d4e5f6", created=T0, secret=bytes(range(32, 64)))
RING = KeyRing([KEY])
CAMPAIGN = "spring-sale"
RECIPIENT = "cust_0123456789abcde"  # 20 characters
EMAIL = "alice.smith@example.com"
DAY = 86400
# Tampering can make a token unreadable, point at another key, or break the MAC; never anything else.
TAMPER_REASONS = {"token-malformed", "token-unknown-key", "token-bad-signature"}


def signer(ring: KeyRing = RING) -> TokenSigner:
    return TokenSigner(ring)


def verify(token: str, *, now: int = NOW, ring: KeyRing = RING) -> Claims:
    return TokenVerifier(ring).verify(token, now=now)


def decode(token: str) -> bytes:
    return base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))


def encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def remac(payload: bytes, mac_key: bytes) -> str:
    """Forge a token from a payload, MAC'd with the given key (as an attacker or a buggy signer would)."""
    return encode(payload + crypto.mac(mac_key, payload))


TOKEN_KEY = crypto.derive_key(KEY.secret, "token")


def esp_token_as_the_esp_computes_it(campaign: str, recipient: str, key: Key = KEY) -> str:
    # What a Liquid template does: {{ rcpt | hmac_sha256: "<esp campaign key>" | slice: 0, 32 }}
    esp_key_hex = esp_campaign_key(key, campaign)
    digest = hmac.new(esp_key_hex.encode(), recipient.encode(), hashlib.sha256).hexdigest()[:32]
    return f"e1.{campaign}.{key.kid}.{recipient}.{digest}"


def sample_tokens() -> dict[str, str]:
    s = signer()
    return {
        "plain": s.sign(CAMPAIGN, RECIPIENT, now=NOW),
        "sealed": s.sign(CAMPAIGN, EMAIL, now=NOW),
        "shared": s.sign_shared(CAMPAIGN, now=NOW, variant="b"),
        "variant": s.sign(CAMPAIGN, RECIPIENT, now=NOW, variant="hero-2"),
    }


# --- round trips --------------------------------------------------------------------------------------


def test_plain_round_trip() -> None:
    token = signer().sign(CAMPAIGN, RECIPIENT, now=NOW)
    assert verify(token, now=NOW + 1) == Claims(
        recipient=RECIPIENT,
        campaign=CAMPAIGN,
        kid="a1b2c3",
        issued_at=NOW,
        expires_at=NOW + 31 * DAY,
        sealed=False,
        variant=None,
        form="opentime",
    )


def test_token_length_stays_under_100_chars() -> None:
    # Emails have size limits (Gmail clips at 102 KB) and a message carries many URLs.
    token = signer().sign(CAMPAIGN, RECIPIENT, now=NOW)
    assert len(token) < 100


def test_largest_token_fits_the_verifier_limit() -> None:
    token = signer().sign("c" * 40, "é" * 100, now=NOW, variant="v" * 20, seal=True)
    assert len(token) <= MAX_TOKEN_CHARS
    assert verify(token).recipient == "é" * 100


def test_sealed_email_round_trip() -> None:
    token = signer().sign(CAMPAIGN, EMAIL, now=NOW)
    claims = verify(token)
    assert claims.recipient == EMAIL
    assert claims.sealed
    assert not claims.shared


def test_sealed_email_never_appears_in_the_url() -> None:
    # An address in a URL leaks to proxies, CDN logs and analytics; sealing must hide every part of it.
    token = signer().sign(CAMPAIGN, EMAIL, now=NOW)
    assert "@" not in token
    for part in ("alice", "smith", "example"):
        assert part not in token.lower()
        assert part.encode() not in decode(token)
    assert signer().sign(CAMPAIGN, EMAIL, now=NOW) != token  # fresh nonce: tokens are not linkable


def test_seal_can_be_forced_but_not_refused_for_addresses() -> None:
    token = signer().sign(CAMPAIGN, RECIPIENT, now=NOW, seal=True)
    assert RECIPIENT.encode() not in decode(token)
    claims = verify(token)
    assert claims.sealed
    assert claims.recipient == RECIPIENT
    with pytest.raises(ValueError, match="must be sealed"):
        signer().sign(CAMPAIGN, EMAIL, now=NOW, seal=False)


def test_shared_round_trip() -> None:
    token = signer().sign_shared(CAMPAIGN, now=NOW, ttl_seconds=3600)
    claims = verify(token)
    assert claims.shared
    assert claims.recipient is None
    assert not claims.sealed
    assert claims.expires_at == NOW + 3600


def test_variant_round_trip() -> None:
    assert verify(signer().sign(CAMPAIGN, RECIPIENT, now=NOW, variant="hero-2")).variant == "hero-2"
    assert verify(signer().sign(CAMPAIGN, EMAIL, now=NOW, variant="b")).variant == "b"
    assert verify(signer().sign_shared(CAMPAIGN, now=NOW, variant="b")).variant == "b"


def test_unicode_recipient_round_trip() -> None:
    assert verify(signer().sign(CAMPAIGN, "kunde-müller-東京", now=NOW)).recipient == "kunde-müller-東京"


# --- ESP form -----------------------------------------------------------------------------------------


def test_liquid_hmac_sha256_takes_its_key_as_text() -> None:
    # Shopify's documented example: 'Polyjuice' | hmac_sha256: 'Polina'. The ESP form relies on these
    # semantics (key = the bytes of the string, lowercase hex output).
    expected = "8e0d5d65cff1242a4af66c8f4a32854fd5fb80edcc8aabe9b302b29c7c71dc20"
    assert crypto.mac(b"Polina", b"Polyjuice", size=32).hex() == expected


def test_esp_campaign_key_is_hex_of_derived_key() -> None:
    esp_key = esp_campaign_key(KEY, CAMPAIGN)
    assert esp_key == crypto.derive_key(KEY.secret, "esp/" + CAMPAIGN).hex()
    assert len(esp_key) == 64
    assert esp_campaign_key(KEY, "other") != esp_key


def test_esp_round_trip() -> None:
    token = esp_token_as_the_esp_computes_it(CAMPAIGN, "cust_42")
    assert signer().sign_esp(CAMPAIGN, "cust_42") == token
    verifier = TokenVerifier(RING)
    for _ in range(2):  # second pass uses the cached campaign key
        assert verifier.verify(token, now=NOW) == Claims(
            recipient="cust_42",
            campaign=CAMPAIGN,
            kid="a1b2c3",
            issued_at=None,
            expires_at=None,
            sealed=False,
            variant=None,
            form="esp",
        )


def test_esp_tokens_do_not_expire() -> None:
    token = esp_token_as_the_esp_computes_it(CAMPAIGN, "cust_42")
    assert verify(token, now=2**32 + 10 * 365 * DAY).recipient == "cust_42"


def test_esp_token_for_another_campaign_is_rejected() -> None:
    # Attack: reuse a recipient's valid MAC from one campaign under another campaign's name.
    token = esp_token_as_the_esp_computes_it(CAMPAIGN, "cust_42")
    with pytest.raises(TokenBadSignature):
        verify(token.replace(CAMPAIGN, "other-campaign"))


@pytest.mark.parametrize(
    "token",
    [
        "e1.spring-sale.a1b2c3.cust_42",
        "e1.spring-sale.a1b2c3.cust_42.00.extra",
        "e1.Spring.a1b2c3.cust_42." + "0" * 32,
        "e1.spring-sale.A1B2C3.cust_42." + "0" * 32,
        "e1.spring-sale.a1b2c3.alice@example.com." + "0" * 32,
        "e1.spring-sale.a1b2c3." + "x" * 65 + "." + "0" * 32,
        "e1.spring-sale.a1b2c3.cust_42." + "0" * 31,
        "e1.spring-sale.a1b2c3.cust_42." + "A" * 32,
        "e1..a1b2c3.cust_42." + "0" * 32,
    ],
)
def test_malformed_esp_tokens(token: str) -> None:
    with pytest.raises(TokenMalformed):
        verify(token)


def test_esp_sign_refuses_email_recipients() -> None:
    with pytest.raises(ValueError, match="no email addresses"):
        signer().sign_esp(CAMPAIGN, EMAIL)


def test_esp_unknown_key() -> None:
    token = esp_token_as_the_esp_computes_it(CAMPAIGN, "cust_42", key=OTHER_KEY)
    with pytest.raises(TokenUnknownKey, match="'d4e5f6' is not in the key ring"):
        verify(token)


def test_tamper_every_char_of_esp_token() -> None:
    token = esp_token_as_the_esp_computes_it(CAMPAIGN, "cust_42")
    for i, char in enumerate(token):
        for replacement in string.ascii_letters + string.digits + "-_.@":
            if replacement != char:
                tampered = token[:i] + replacement + token[i + 1 :]
                with pytest.raises(TokenError) as info:
                    verify(tampered)
                assert info.value.reason in TAMPER_REASONS


# --- tampering ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["plain", "sealed", "shared", "variant"])
def test_tamper_every_byte(kind: str) -> None:
    # Attack: flip bits anywhere in a genuine token to change its recipient, campaign or times.
    data = decode(sample_tokens()[kind])
    verifier = TokenVerifier(RING)
    for i in range(len(data)):
        for mask in (0x01, 0x80, 0xFF):
            tampered = encode(data[:i] + bytes([data[i] ^ mask]) + data[i + 1 :])
            with pytest.raises(TokenError) as info:
                verifier.verify(tampered, now=NOW)
            assert info.value.reason in TAMPER_REASONS


@pytest.mark.parametrize("kind", ["plain", "sealed"])
def test_tamper_every_char(kind: str) -> None:
    # Also covers non-canonical base64 (same bytes, different last char) and characters outside base64url.
    token = sample_tokens()[kind]
    verifier = TokenVerifier(RING)
    alphabet = string.ascii_letters + string.digits + "-_+/=. é\n"
    for i, char in enumerate(token):
        for replacement in alphabet:
            if replacement != char:
                with pytest.raises(TokenError) as info:
                    verifier.verify(token[:i] + replacement + token[i + 1 :], now=NOW)
                assert info.value.reason in TAMPER_REASONS


@pytest.mark.parametrize("kind", ["plain", "sealed", "shared", "variant"])
def test_truncated_and_extended_tokens(kind: str) -> None:
    token = sample_tokens()[kind]
    verifier = TokenVerifier(RING)
    for n in range(len(token)):
        with pytest.raises(TokenError) as info:
            verifier.verify(token[:n], now=NOW)
        assert info.value.reason in TAMPER_REASONS
    for suffix in ("A", "AA", "AAAA", "=", "."):
        with pytest.raises(TokenError):
            verifier.verify(token + suffix, now=NOW)


@pytest.mark.parametrize(
    "garbage",
    [
        "",
        ".",
        "e1.",
        "e1....",
        "A",
        "AA",
        "AAAA",
        "====",
        " ",
        "\x00",
        "é",
        "AQ",
        "AQAG",
        "/v1/x",
        "e1.a.b.c.d",
    ],
)
def test_garbage_is_malformed_or_unknown(garbage: str) -> None:
    with pytest.raises(TokenError) as info:
        verify(garbage)
    assert info.value.reason in TAMPER_REASONS


def test_too_long_token_rejected_before_decoding() -> None:
    with pytest.raises(TokenMalformed, match="longer than 512"):
        verify("A" * (MAX_TOKEN_CHARS + 1))


def test_wrong_purpose_key_is_rejected() -> None:
    # Attack: a MAC made with another purpose's key (e.g. one handed to an ESP) must not mint tokens.
    payload = decode(sample_tokens()["plain"])[:-16]
    for wrong_key in (
        KEY.secret,
        crypto.derive_key(KEY.secret, "seal"),
        crypto.derive_key(KEY.secret, "esp/" + CAMPAIGN),
        esp_campaign_key(KEY, CAMPAIGN).encode(),
    ):
        with pytest.raises(TokenBadSignature, match="signature does not match"):
            verify(remac(payload, wrong_key))
    assert verify(remac(payload, TOKEN_KEY)).recipient == RECIPIENT


def test_esp_mac_made_with_token_key_is_rejected() -> None:
    mac = crypto.mac(crypto.derive_key(KEY.secret, "token").hex().encode(), b"cust_42").hex()
    with pytest.raises(TokenBadSignature):
        verify(f"e1.{CAMPAIGN}.a1b2c3.cust_42.{mac}")


def test_sealed_recipient_that_fails_to_open_is_a_bad_signature() -> None:
    # Even with a valid token MAC, a sealed blob moved to another campaign (aad) must not open.
    sealed = decode(signer().sign(CAMPAIGN, EMAIL, now=NOW))[:-16]
    moved = sealed.replace(b"\x0b" + CAMPAIGN.encode(), b"\x0b" + b"other-sale1")
    with pytest.raises(TokenBadSignature, match="sealed recipient failed to open"):
        verify(remac(moved, TOKEN_KEY))


@pytest.mark.parametrize(
    ("offset", "value", "message"),
    [(0, 2, "unsupported token version 2"), (1, 0x08, "invalid flags"), (1, 0x05, "invalid flags")],
)
def test_authentic_but_invalid_header(offset: int, value: int, message: str) -> None:
    payload = bytearray(decode(sample_tokens()["plain"])[:-16])
    payload[offset] = value
    with pytest.raises(TokenMalformed, match=message):
        verify(remac(bytes(payload), TOKEN_KEY))


def test_authentic_trailing_bytes_are_malformed() -> None:
    payload = decode(sample_tokens()["plain"])[:-16] + b"\x00"
    with pytest.raises(TokenMalformed, match="trailing bytes"):
        verify(remac(payload, TOKEN_KEY))


def test_error_messages_do_not_echo_secrets() -> None:
    payload = decode(sample_tokens()["plain"])[:-16]
    with pytest.raises(TokenBadSignature) as info:
        verify(remac(payload, KEY.secret))
    for secret in (KEY.secret.hex(), TOKEN_KEY.hex(), esp_campaign_key(KEY, CAMPAIGN)):
        assert secret not in str(info.value)


# --- time ---------------------------------------------------------------------------------------------


def test_expired_token_carries_its_claims() -> None:
    token = signer().sign(CAMPAIGN, EMAIL, now=NOW, ttl_seconds=DAY)
    assert verify(token, now=NOW + DAY - 1).recipient == EMAIL
    with pytest.raises(TokenExpired, match="expired 0s ago") as info:
        verify(token, now=NOW + DAY)
    assert info.value.reason == "token-expired"
    assert info.value.claims.campaign == CAMPAIGN
    assert info.value.claims.recipient == EMAIL


def test_not_yet_valid_beyond_clock_skew() -> None:
    token = signer().sign(CAMPAIGN, RECIPIENT, now=NOW)
    assert verify(token, now=NOW - 300).recipient == RECIPIENT
    with pytest.raises(TokenNotYetValid, match="301s in the future"):
        verify(token, now=NOW - 301)
    strict = TokenVerifier(RING, clock_skew_seconds=0)
    with pytest.raises(TokenNotYetValid):
        strict.verify(token, now=NOW - 1)


def test_default_ttl_is_configurable() -> None:
    token = TokenSigner(RING, default_ttl_seconds=60).sign(CAMPAIGN, RECIPIENT, now=NOW)
    assert verify(token).expires_at == NOW + 60


# --- rotation -----------------------------------------------------------------------------------------


def test_rotation_old_tokens_verify_and_new_tokens_use_newest_key() -> None:
    old_token = signer().sign(CAMPAIGN, RECIPIENT, now=NOW)
    rotated = rotate(RING, T0 + timedelta(days=30))
    new_token = TokenSigner(rotated).sign(CAMPAIGN, RECIPIENT, now=NOW)
    assert verify(old_token, ring=rotated).kid == "a1b2c3"
    assert verify(new_token, ring=rotated).kid == rotated.signing_key.kid != "a1b2c3"
    with pytest.raises(TokenUnknownKey):
        verify(new_token, ring=RING)  # a node that has not reloaded the ring yet


def test_rotated_out_key_is_unknown() -> None:
    old_token = signer().sign(CAMPAIGN, RECIPIENT, now=NOW)
    old_esp = esp_token_as_the_esp_computes_it(CAMPAIGN, "cust_42")
    ring = remove(rotate(RING, T0 + timedelta(days=30)), "a1b2c3")
    for token in (old_token, old_esp):
        with pytest.raises(TokenUnknownKey, match="'a1b2c3' is not in the key ring") as info:
            verify(token, ring=ring)
        assert info.value.reason == "token-unknown-key"


def test_same_kid_with_another_secret_is_a_bad_signature() -> None:
    impostor = KeyRing([Key(kid="a1b2c3", created=T0, secret=OTHER_KEY.secret)])
    with pytest.raises(TokenBadSignature):
        verify(sample_tokens()["plain"], ring=impostor)


# --- validation on sign -------------------------------------------------------------------------------


@pytest.mark.parametrize("campaign", ["", "Spring", "-sale", "a" * 41, "spring sale", "sale.2", "é"])
def test_sign_rejects_bad_campaigns(campaign: str) -> None:
    with pytest.raises(ValueError, match="campaign"):
        signer().sign(campaign, RECIPIENT, now=NOW)
    with pytest.raises(ValueError, match="campaign"):
        signer().sign_shared(campaign, now=NOW)


@pytest.mark.parametrize(
    ("recipient", "message"),
    [
        ("", "1..200 bytes"),
        ("x" * 201, "1..200 bytes"),
        ("é" * 101, "1..200 bytes"),
        ("cust\n1", "control characters"),
        ("cust\x7f", "control characters"),
        ("cust\ud800", "not valid Unicode"),
    ],
)
def test_sign_rejects_bad_recipients(recipient: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        signer().sign(CAMPAIGN, recipient, now=NOW)


@pytest.mark.parametrize("variant", ["", "B", "v" * 21, "a.b"])
def test_sign_rejects_bad_variants(variant: str) -> None:
    with pytest.raises(ValueError, match="variant"):
        signer().sign(CAMPAIGN, RECIPIENT, now=NOW, variant=variant)


@pytest.mark.parametrize(("now", "ttl"), [(NOW, 0), (NOW, -1), (-1, 60), (2**32 - 10, 60)])
def test_sign_rejects_bad_times(now: int, ttl: int) -> None:
    with pytest.raises(ValueError):
        signer().sign(CAMPAIGN, RECIPIENT, now=now, ttl_seconds=ttl)


def test_reasons_are_distinct_machine_codes() -> None:
    classes: list[type[TokenError]] = [
        TokenMalformed,
        TokenUnknownKey,
        TokenBadSignature,
        TokenExpired,
        TokenNotYetValid,
    ]
    reasons = [cls.reason for cls in classes]
    assert len(set(reasons)) == len(reasons)
    assert all(issubclass(cls, TokenError) for cls in classes)
    assert all(reason.startswith("token-") for reason in reasons)


def test_remembered_tokens_are_still_checked_for_expiry() -> None:
    # Attack: a token verified once must not stay valid past its expiry because it was cached.
    ring = new_keyring(datetime(2026, 1, 1, tzinfo=UTC))
    token = TokenSigner(ring).sign("spring", "cust-1", now=1_800_000_000, ttl_seconds=60)
    verifier = TokenVerifier(ring)
    assert verifier.verify(token, now=1_800_000_010).recipient == "cust-1"
    with pytest.raises(TokenExpired):
        verifier.verify(token, now=1_800_000_060)
    with pytest.raises(TokenNotYetValid):
        verifier.verify(token, now=1_799_000_000)


# --- the campaign a bad token names (unauthenticated; picks public fallback content only) ------------------


def refusal(token: str, ring: KeyRing = RING) -> TokenError:
    with pytest.raises(TokenError) as caught:
        verify(token, ring=ring)
    return caught.value


def test_a_bad_mac_still_names_its_campaign_for_the_static_fallback() -> None:
    token = signer().sign(CAMPAIGN, RECIPIENT, now=NOW)
    data = decode(token)
    forged = encode(data[:-1] + bytes([data[-1] ^ 1]))
    error = refusal(forged)
    assert isinstance(error, TokenBadSignature)
    assert error.claimed_campaign == CAMPAIGN


def test_an_unknown_key_names_its_campaign_and_a_malformed_token_none() -> None:
    token = signer(KeyRing([OTHER_KEY])).sign(CAMPAIGN, RECIPIENT, now=NOW)
    error = refusal(token)
    assert (type(error), error.claimed_campaign) == (TokenUnknownKey, CAMPAIGN)
    assert refusal("not-a-token").claimed_campaign is None
    assert refusal(token[:12]).claimed_campaign is None  # cut before the campaign field


def test_esp_tokens_name_their_campaign_when_refused() -> None:
    good = signer().sign_esp(CAMPAIGN, RECIPIENT)
    assert refusal(good[:-1] + ("0" if good[-1] != "0" else "1")).claimed_campaign == CAMPAIGN
    assert refusal(good[:-3]).claimed_campaign == CAMPAIGN  # a cut MAC: malformed, campaign still readable
    assert refusal("e1.Not_A_Campaign!." + good.split(".", 2)[2]).claimed_campaign is None


def test_a_claimed_campaign_must_look_like_a_campaign_name() -> None:
    payload = bytearray(decode(signer().sign(CAMPAIGN, RECIPIENT, now=NOW))[:-16])
    start = 3 + payload[2] + 8
    not_a_name = b"SPRING/SAL\xff".ljust(len(CAMPAIGN), b"x")[: len(CAMPAIGN)]
    payload[start + 1 : start + 1 + len(CAMPAIGN)] = not_a_name
    assert refusal(remac(bytes(payload), b"\x00" * 32)).claimed_campaign is None
