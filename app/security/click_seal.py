"""Sealed click targets: what a send-time item linked to, carried in its click URL.

The HTML part of an email shows the items of a click-tracked list as they were when it was sent; no
open records them (an open records what the amp-list answer showed). So each such item's click URL
carries what it showed, ``?to=<sealed>``: the variant, the experiment and the link, sealed with
AES-256-GCM under ``derive_key(secret, "click")`` of the current key, bound (as associated data) to
the campaign, the recipient, the block and the slot. Sealed, not only signed: the link comes from the
recipient's data (what they viewed, what is in their cart) and must not be readable in a URL.

Format: ``<kid>.<base64url(nonce | ciphertext | tag)>``; the plaintext is
``variant \\x1f experiment \\x1f link``. The nonce is a MAC of the associated data and the
plaintext (under ``derive_key(secret, "click-nonce")``), so a recipient's email renders the same
bytes every time and a nonce never repeats for different inputs. A seal opens only under the key it
names, for the same campaign, recipient, block and slot: moved to another recipient's token or
another slot, it fails and the click falls back to what the open recorded. A sealed link is still
checked by ``safe_target`` at click time, like any other.
"""

from __future__ import annotations

import base64
import binascii
from typing import NamedTuple

from app.security import crypto
from app.security.keyring import KeyRing

_SEP = "\x1f"
MAX_SEALED_CHARS = 2048  # a link of ~1.4 KB; longer values are not looked at


class Sealed(NamedTuple):
    """What one send-time item showed."""

    variant: str
    experiment: str | None
    link: str


class ClickSealer:
    """Seals with the ring's signing key, opens with whichever key of the ring a seal names."""

    def __init__(self, ring: KeyRing) -> None:
        signing = ring.signing_key
        self._kid = signing.kid
        self._nonce_key = crypto.MacKey(crypto.derive_key(signing.secret, "click-nonce"))
        self._sealers = {key.kid: crypto.Sealer(crypto.derive_key(key.secret, "click")) for key in ring}

    def seal(self, shown: Sealed, campaign: str, recipient: str, block: str, slot: int) -> str:
        plain = _SEP.join((shown.variant, shown.experiment or "", shown.link)).encode()
        aad = _aad(campaign, recipient, block, slot)
        nonce = self._nonce_key.mac(aad + plain, crypto.NONCE_SIZE)
        blob = self._sealers[self._kid].seal(plain, aad, nonce)
        return f"{self._kid}.{base64.urlsafe_b64encode(blob).rstrip(b'=').decode()}"

    def open(self, value: str, campaign: str, recipient: str, block: str, slot: int) -> Sealed | None:
        """What the seal holds, or None when it is not one of ours for this click."""
        if len(value) > MAX_SEALED_CHARS:
            return None
        kid, _, encoded = value.partition(".")
        sealer = self._sealers.get(kid)
        if sealer is None or not encoded:
            return None
        try:
            padded = encoded + "=" * (-len(encoded) % 4)
            blob = base64.b64decode(padded, altchars=b"-_", validate=True)  # no character skipped
            plain = sealer.unseal(blob, _aad(campaign, recipient, block, slot)).decode()
        except (binascii.Error, ValueError, crypto.SealError):  # UnicodeDecodeError is a ValueError
            return None
        parts = plain.split(_SEP)
        if len(parts) != 3:
            return None
        variant, experiment, link = parts
        return Sealed(variant, experiment or None, link)


def _aad(campaign: str, recipient: str, block: str, slot: int) -> bytes:
    # Lengths first: no two different (campaign, recipient, block) can make the same bytes.
    fields = [campaign.encode(), recipient.encode(), block.encode()]
    return b"".join(len(f).to_bytes(2, "big") + f for f in fields) + slot.to_bytes(2, "big")
