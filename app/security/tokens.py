"""Signed URL tokens in two forms, both checked by one `TokenVerifier`.

Opentime token (minted by us): base64url, no padding, of ``payload || mac`` where
``mac = HMAC-SHA256(derive_key(secret, "token"), payload)[:16]`` and the payload is, big-endian::

    version u8 (=1) | flags u8 | kid_len u8, kid (ascii) | issued_at u32 | expires_at u32 (unix seconds) |
    campaign_len u8, campaign (utf-8) | recipient_len u8, recipient | [variant_len u8, variant]

    flags: bit0 recipient sealed, bit1 has variant, bit2 shared (no recipient)

A recipient id that looks like an email address (an "@" in any spelling: ``app.personal.has_at``) is
sealed (AES-GCM under ``derive_key(secret, "seal")``, aad = campaign) so that no address ever appears
in a URL.

ESP token (computed by the ESP's template language at send time)::

    e1.<campaign>.<kid>.<recipient>.<mac>

``mac`` is the first 32 lowercase hex characters of HMAC-SHA256 whose *key is the ASCII text* of
``esp_campaign_key(key, campaign)`` (a 64-char hex string) and whose message is the recipient id, e.g. in
Liquid ``{{ recipient_id | hmac_sha256: "<esp campaign key>" | slice: 0, 32 }}``. ESP tokens do not expire:
they stay valid while their key is in the ring.

Exceptions (``reason`` is the machine code sent in an HTTP header)::

    TokenError
     ├── TokenMalformed       token-malformed       not a token of ours: bad encoding, layout or field
     ├── TokenUnknownKey      token-unknown-key     key id not in the ring (rotated out, or forged)
     ├── TokenBadSignature    token-bad-signature   MAC mismatch or sealed recipient fails to open
     ├── TokenExpired         token-expired         authentic but past expires_at; carries `.claims`
     └── TokenNotYetValid     token-not-yet-valid   issued_at beyond now + clock skew
"""

from __future__ import annotations

import base64
import binascii
import re
import struct
from typing import Literal, NamedTuple

from app.errors import OpentimeError
from app.personal import has_at
from app.security import crypto
from app.security.keyring import Key, KeyRing

__all__ = [
    "Claims",
    "TokenBadSignature",
    "TokenError",
    "TokenExpired",
    "TokenMalformed",
    "TokenNotYetValid",
    "TokenSigner",
    "TokenUnknownKey",
    "TokenVerifier",
    "check_recipient",
    "esp_campaign_key",
]

MAX_TOKEN_CHARS = 512
AUTHENTIC_CACHE_SIZE = 20_000
DEFAULT_TTL_SECONDS = 31 * 86400
VERSION = 1
MAC_SIZE = 16
ESP_PREFIX = "e1"

_SEALED, _HAS_VARIANT, _SHARED = 0x01, 0x02, 0x04
_KNOWN_FLAGS = _SEALED | _HAS_VARIANT | _SHARED
_TIMES = struct.Struct(">II")
_U32_MAX = 2**32 - 1
_ESP_CACHE_SIZE = 4096
_FROM_URLSAFE = bytes.maketrans(b"-_", b"+/")
_TO_URLSAFE = bytes.maketrans(b"+/", b"-_")
_PADDING = (b"", b"=", b"==", b"=")  # by length % 4; 1 is never valid and strict decoding says so

_CAMPAIGN_RE = re.compile(r"[a-z0-9][a-z0-9_-]{0,39}")
_VARIANT_RE = re.compile(r"[a-z0-9_-]{1,20}")
_ESP_RECIPIENT_RE = re.compile(r"[A-Za-z0-9_-]{1,64}")
_KID_RE = re.compile(r"[0-9a-f]{6}")
_ESP_MAC_RE = re.compile(r"[0-9a-f]{32}")
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f-\x9f]")


class TokenError(OpentimeError):
    reason: str = "token-invalid"
    # The campaign the token names, NOT authenticated: good only for choosing a campaign's static,
    # public fallback content (never anything personal). None when the token does not parse that far.
    claimed_campaign: str | None = None

    def claiming(self, campaign: str | None) -> TokenError:
        if campaign is not None and _CAMPAIGN_RE.fullmatch(campaign):
            self.claimed_campaign = campaign
        return self


class TokenMalformed(TokenError):
    reason = "token-malformed"


class TokenUnknownKey(TokenError):
    reason = "token-unknown-key"


class TokenBadSignature(TokenError):
    reason = "token-bad-signature"


class TokenNotYetValid(TokenError):
    reason = "token-not-yet-valid"


class TokenExpired(TokenError):
    """Authentic but expired; `.claims` lets the server still pick the campaign's generic fallback."""

    reason = "token-expired"

    def __init__(self, message: str, claims: Claims) -> None:
        super().__init__(message)
        self.claims = claims


class Claims(NamedTuple):
    """What a verified token says. A named tuple: built once per new token on the open-time path,
    where a frozen dataclass's __init__ costs several times more."""

    recipient: str | None
    campaign: str
    kid: str
    issued_at: int | None
    expires_at: int | None
    sealed: bool
    variant: str | None
    form: Literal["opentime", "esp"]

    @property
    def shared(self) -> bool:
        """A campaign-wide token: same content for everyone, so caches may share one render."""
        return self.recipient is None


def esp_campaign_key(key: Key, campaign: str) -> str:
    """The per-campaign HMAC key handed to the ESP, as 64 hex chars; HMAC uses its ASCII bytes."""
    _check_campaign(campaign)
    return crypto.derive_key(key.secret, "esp/" + campaign).hex()


class _KeyMaterial(NamedTuple):
    mac_key: crypto.MacKey
    sealer: crypto.Sealer


def _material(key: Key) -> _KeyMaterial:
    return _KeyMaterial(
        crypto.MacKey(crypto.derive_key(key.secret, "token")),
        crypto.Sealer(crypto.derive_key(key.secret, "seal")),
    )


class TokenSigner:
    """Mints tokens with the ring's newest key."""

    def __init__(self, ring: KeyRing, *, default_ttl_seconds: int = DEFAULT_TTL_SECONDS) -> None:
        _check_ttl(default_ttl_seconds)
        self.ring = ring  # send-time click seals use the same keys (app.security.click_seal)
        self._key = ring.signing_key
        self._material = _material(self._key)
        self._default_ttl = default_ttl_seconds

    @property
    def kid(self) -> str:
        return self._key.kid

    def sign(
        self,
        campaign: str,
        recipient: str,
        *,
        now: int,
        ttl_seconds: int | None = None,
        variant: str | None = None,
        seal: bool | None = None,
    ) -> str:
        """Sign a per-recipient token; ids containing "@" are always sealed (`seal=False` is refused),
        whichever way the "@" is written (full-width, percent-encoded: see ``app.personal.has_at``)."""
        _check_campaign(campaign)
        rcpt = _recipient_bytes(recipient)
        personal = has_at(recipient)
        if seal is None:
            seal = personal
        elif not seal and personal:
            raise ValueError("recipient ids that look like email addresses must be sealed")
        if seal:
            rcpt = self._material.sealer.seal(rcpt, campaign.encode())
        flags = _SEALED if seal else 0
        return self._mint(flags, campaign, rcpt, now=now, ttl_seconds=ttl_seconds, variant=variant)

    def sign_shared(
        self, campaign: str, *, now: int, ttl_seconds: int | None = None, variant: str | None = None
    ) -> str:
        """Sign a campaign-wide token with no recipient (one CDN copy serves everyone)."""
        _check_campaign(campaign)
        return self._mint(_SHARED, campaign, b"", now=now, ttl_seconds=ttl_seconds, variant=variant)

    def sign_esp(self, campaign: str, recipient: str) -> str:
        """The ESP form, computed exactly as the ESP's template would (for exports and tests)."""
        if not _ESP_RECIPIENT_RE.fullmatch(recipient):
            raise ValueError("ESP recipient ids must match [A-Za-z0-9_-]{1,64} (no email addresses)")
        esp_key = esp_campaign_key(self._key, campaign).encode("ascii")
        tag = crypto.mac(esp_key, recipient.encode(), MAC_SIZE).hex()
        return f"{ESP_PREFIX}.{campaign}.{self._key.kid}.{recipient}.{tag}"

    def _mint(
        self,
        flags: int,
        campaign: str,
        rcpt: bytes,
        *,
        now: int,
        ttl_seconds: int | None,
        variant: str | None,
    ) -> str:
        ttl = self._default_ttl if ttl_seconds is None else ttl_seconds
        _check_ttl(ttl)
        if not 0 <= now <= _U32_MAX - ttl:
            raise ValueError("now + ttl_seconds must fit in an unsigned 32-bit unix time")
        kid = self._key.kid.encode("ascii")
        payload = bytearray((VERSION, flags, len(kid)))
        payload += kid + _TIMES.pack(now, now + ttl) + _field(campaign.encode()) + _field(rcpt)
        if variant is not None:
            if not _VARIANT_RE.fullmatch(variant):
                raise ValueError(f"variant {variant!r} must match [a-z0-9_-]{{1,20}}")
            payload[1] |= _HAS_VARIANT
            payload += _field(variant.encode())
        payload += self._material.mac_key.mac(payload, MAC_SIZE)
        return base64.urlsafe_b64encode(payload).rstrip(b"=").decode("ascii")


class TokenVerifier:
    """Checks either token form against every key in the ring (selected by key id, O(1))."""

    def __init__(self, ring: KeyRing, *, clock_skew_seconds: int = 300) -> None:
        if clock_skew_seconds < 0:
            raise ValueError("clock_skew_seconds must be >= 0")
        self._keys = {key.kid: key for key in ring}
        # Derived once here so that a verification costs one HMAC, not a key derivation.
        self._material = {key.kid: _material(key) for key in ring}
        self._esp_keys: dict[tuple[str, str], crypto.MacKey] = {}
        self._skew = clock_skew_seconds
        # Authentic tokens seen lately: an email's blocks share one token and are fetched together,
        # and re-opens repeat it. Only the (cheap) time checks run again on a hit. Cleared when full.
        self._authentic: dict[str, Claims] = {}

    def verify(self, token: str, *, now: int) -> Claims:
        claims = self._authentic.get(token)
        if claims is None:
            claims = self._authenticate(token)
            if len(self._authentic) >= AUTHENTIC_CACHE_SIZE:
                self._authentic.clear()
            self._authentic[token] = claims
        expires_at = claims.expires_at
        if expires_at is None:  # the ESP form carries no times
            return claims
        # The common case inline (this runs on every open); _check_times says why a token is not valid.
        if now < expires_at and (claims.issued_at or 0) <= now + self._skew:
            return claims
        return self._check_times(claims, now)

    def _authenticate(self, token: str) -> Claims:
        """The signature and layout checks, which do not depend on the time."""
        if len(token) > MAX_TOKEN_CHARS:
            raise TokenMalformed(f"token is longer than {MAX_TOKEN_CHARS} characters")
        if token.startswith(ESP_PREFIX + "."):
            return self._verify_esp(token)
        return self._verify_opentime(token)

    def _verify_opentime(self, token: str) -> Claims:
        data = _b64decode(token)
        if len(data) < 3 + MAC_SIZE:
            raise TokenMalformed("token is too short")
        payload = data[:-MAC_SIZE]
        kid = _read_kid(payload)
        material = self._material.get(kid)
        if material is None:
            error: TokenError = TokenUnknownKey(f"token key id {kid!r} is not in the key ring (rotated out?)")
            raise error.claiming(_claimed_campaign(payload))
        if not crypto.macs_equal(material.mac_key.mac(payload, MAC_SIZE), data[-MAC_SIZE:]):
            error = TokenBadSignature("token signature does not match (tampered, or signed with another key)")
            raise error.claiming(_claimed_campaign(payload))
        return _parse_payload(payload, kid, material.sealer)

    def _check_times(self, claims: Claims, now: int) -> Claims:
        assert claims.issued_at is not None and claims.expires_at is not None  # always set in this form
        if claims.issued_at > now + self._skew:
            ahead = claims.issued_at - now
            raise TokenNotYetValid(f"token issued {ahead}s in the future (allowed clock skew {self._skew}s)")
        if now >= claims.expires_at:
            raise TokenExpired(f"token expired {now - claims.expires_at}s ago", claims)
        return claims

    def _verify_esp(self, token: str) -> Claims:
        parts = token.split(".")
        if len(parts) != 5:
            raise TokenMalformed("ESP token must have 5 dot-separated parts: e1.campaign.kid.recipient.mac")
        _, campaign, kid, recipient, tag_hex = parts
        try:
            _check_esp_parts(campaign, kid, recipient, tag_hex)
        except TokenMalformed as exc:
            raise exc.claiming(campaign) from None
        esp_key = self._esp_keys.get((kid, campaign))
        if esp_key is None:
            key = self._keys.get(kid)
            if key is None:
                unknown = TokenUnknownKey(f"ESP token key id {kid!r} is not in the key ring (rotated out?)")
                raise unknown.claiming(campaign)
            esp_key = crypto.MacKey(esp_campaign_key(key, campaign).encode("ascii"))
        if not crypto.macs_equal(esp_key.mac(recipient.encode(), MAC_SIZE), bytes.fromhex(tag_hex)):
            forged = TokenBadSignature(
                "ESP token signature does not match (tampered, or another campaign/key)"
            )
            raise forged.claiming(campaign)
        self._remember_esp_key(kid, campaign, esp_key)
        return Claims(recipient, campaign, kid, None, None, False, None, "esp")

    def _remember_esp_key(self, kid: str, campaign: str, esp_key: crypto.MacKey) -> None:
        # Only keys that just verified a token get cached, so forged campaign names cannot fill it.
        if len(self._esp_keys) >= _ESP_CACHE_SIZE and (kid, campaign) not in self._esp_keys:
            self._esp_keys.clear()
        self._esp_keys[(kid, campaign)] = esp_key


def _b64decode(token: str) -> bytes:
    # Strict: a lenient decoder drops stray characters and ignores non-zero padding bits, which would
    # let many different strings verify as the same token. Strict mode rejects stray characters and
    # misplaced padding; re-encoding and comparing rejects the rest ("+", "/", "=" and padding bits).
    try:
        raw = token.encode("ascii")
        data = binascii.a2b_base64(raw.translate(_FROM_URLSAFE) + _PADDING[len(raw) % 4], strict_mode=True)
    except (UnicodeEncodeError, binascii.Error):
        raise TokenMalformed("token is not base64url text") from None
    if binascii.b2a_base64(data, newline=False).translate(_TO_URLSAFE).rstrip(b"=") != raw:
        raise TokenMalformed("token is not canonical base64url")
    return data


def _read_kid(payload: bytes) -> str:
    """The only fields read before the MAC check: version and key id."""
    if payload[0] != VERSION:
        raise TokenMalformed(f"unsupported token version {payload[0]}")
    kid_end = 3 + payload[2]
    if kid_end > len(payload):
        raise TokenMalformed("token is truncated (key id)")
    kid = payload[3:kid_end]
    if not kid.isascii():
        raise TokenMalformed("token key id is not ASCII")
    return kid.decode("ascii")


def _claimed_campaign(payload: bytes) -> str | None:
    """The campaign field of a payload whose MAC did not check out (unauthenticated), or None."""
    try:
        pos = 3 + payload[2] + _TIMES.size
        raw, _ = _read_field(payload, pos, "campaign")
        return raw.decode("ascii")
    except (IndexError, TokenMalformed, UnicodeDecodeError):
        return None


def _parse_payload(payload: bytes, kid: str, sealer: crypto.Sealer) -> Claims:
    # Runs once per new token on the open-time path: one pass, with the checks in their old order.
    flags = payload[1]
    if flags & ~_KNOWN_FLAGS or (flags & _SHARED and flags & _SEALED):
        raise TokenMalformed(f"token has invalid flags {flags:#04x}")
    pos = 3 + payload[2]
    size = len(payload)
    if pos + _TIMES.size > size:
        raise TokenMalformed("token is truncated (times)")
    issued_at, expires_at = _TIMES.unpack_from(payload, pos)
    campaign_raw, pos = _read_field(payload, pos + _TIMES.size, "campaign")
    rcpt, pos = _read_field(payload, pos, "recipient")
    variant_raw = None
    if flags & _HAS_VARIANT:
        variant_raw, pos = _read_field(payload, pos, "variant")
    if pos != size:
        raise TokenMalformed("token has trailing bytes")
    sealed = flags & _SEALED != 0
    if sealed:
        try:
            rcpt = sealer.unseal(rcpt, campaign_raw)
        except crypto.SealError:
            raise TokenBadSignature("token sealed recipient failed to open") from None
    if flags & _SHARED:
        if rcpt:
            raise TokenMalformed("token recipient does not agree with its shared flag")
        recipient = None
    elif rcpt:
        recipient = _text(rcpt, "recipient")
    else:
        raise TokenMalformed("token recipient does not agree with its shared flag")
    campaign = _text(campaign_raw, "campaign")
    variant = None if variant_raw is None else _text(variant_raw, "variant")
    return Claims(recipient, campaign, kid, issued_at, expires_at, sealed, variant, "opentime")


def _read_field(payload: bytes, pos: int, name: str) -> tuple[bytes, int]:
    try:
        end = pos + 1 + payload[pos]
    except IndexError:
        raise TokenMalformed(f"token is truncated ({name})") from None
    if end > len(payload):
        raise TokenMalformed(f"token is truncated ({name})")
    return payload[pos + 1 : end], end


def _text(raw: bytes, name: str) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise TokenMalformed(f"token {name} is not UTF-8") from None


def _field(value: bytes) -> bytes:
    if len(value) > 255:
        raise ValueError("token field longer than 255 bytes")
    return bytes((len(value),)) + value


def _check_esp_parts(campaign: str, kid: str, recipient: str, tag_hex: str) -> None:
    if not _CAMPAIGN_RE.fullmatch(campaign):
        raise TokenMalformed("ESP token campaign is not a valid campaign name")
    if not _KID_RE.fullmatch(kid):
        raise TokenMalformed("ESP token key id is not 6 lowercase hex characters")
    if not _ESP_RECIPIENT_RE.fullmatch(recipient):
        raise TokenMalformed("ESP token recipient must match [A-Za-z0-9_-]{1,64}")
    if not _ESP_MAC_RE.fullmatch(tag_hex):
        raise TokenMalformed("ESP token mac must be 32 lowercase hex characters")


def _check_campaign(campaign: str) -> None:
    if not _CAMPAIGN_RE.fullmatch(campaign):
        raise ValueError(f"campaign {campaign!r} must match [a-z0-9][a-z0-9_-]{{0,39}}")


def check_recipient(recipient: str) -> None:
    """Raise ValueError unless `recipient` is an id `TokenSigner.sign` accepts (for callers that validate
    input before signing, so that they reject it with the signer's own rule)."""
    _recipient_bytes(recipient)


def _recipient_bytes(recipient: str) -> bytes:
    if _CONTROL_RE.search(recipient):
        raise ValueError("recipient id contains control characters")
    try:
        raw = recipient.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("recipient id is not valid Unicode text") from None
    if not 1 <= len(raw) <= 200:
        raise ValueError(f"recipient id must be 1..200 bytes of UTF-8, got {len(raw)}")
    return raw


def _check_ttl(ttl: int) -> None:
    if ttl <= 0:
        raise ValueError("ttl_seconds must be positive")
