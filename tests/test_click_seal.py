"""Sealed send-time click targets (``app.security.click_seal``): they open only for the click they were
made for, under a key of the ring, and the link is never readable in the URL."""

from __future__ import annotations

import base64
import secrets
from datetime import UTC, datetime, timedelta

import pytest

from app.security.click_seal import MAX_SEALED_CHARS, ClickSealer, Sealed
from app.security.keyring import SECRET_SIZE, Key, KeyRing, new_keyring, remove, rotate

NOW = datetime(2026, 12, 1, tzinfo=UTC)
SHOWN = Sealed("blue", "look", "https://shop.example.com/p/tent-4000?ref=mail")
WHERE = ("flash-sale", "cust-0000001", "deals", 2)


def test_a_seal_opens_to_what_was_sealed_and_hides_the_link() -> None:
    sealer = ClickSealer(new_keyring(NOW))
    value = sealer.seal(SHOWN, *WHERE)
    assert sealer.open(value, *WHERE) == SHOWN
    assert "tent" not in value and "shop" not in value
    assert value.replace(".", "").replace("-", "").replace("_", "").isalnum()  # safe in a query
    without_experiment = Sealed("default", None, SHOWN.link)
    assert sealer.open(sealer.seal(without_experiment, *WHERE), *WHERE) == without_experiment


def test_the_same_input_seals_to_the_same_value_and_different_inputs_do_not() -> None:
    sealer = ClickSealer(new_keyring(NOW))
    value = sealer.seal(SHOWN, *WHERE)
    assert sealer.seal(SHOWN, *WHERE) == value  # an email renders the same bytes each time
    other = sealer.seal(SHOWN._replace(link=SHOWN.link + "x"), *WHERE)
    nonce = base64.urlsafe_b64decode(value.split(".")[1] + "==")[:12]
    other_nonce = base64.urlsafe_b64decode(other.split(".")[1] + "==")[:12]
    assert nonce != other_nonce


@pytest.mark.parametrize(
    "where",
    [
        ("other-campaign", "cust-0000001", "deals", 2),
        ("flash-sale", "cust-0000002", "deals", 2),
        ("flash-sale", "cust-0000001", "banner", 2),
        ("flash-sale", "cust-0000001", "deals", 1),
        ("flash-sal", "ecust-0000001", "deals", 2),  # the same bytes run together: still not the same
    ],
    ids=["campaign", "recipient", "block", "slot", "shifted"],
)
def test_a_seal_does_not_open_for_another_click(where: tuple[str, str, str, int]) -> None:
    sealer = ClickSealer(new_keyring(NOW))
    assert sealer.open(sealer.seal(SHOWN, *WHERE), *where) is None


def test_tampered_truncated_foreign_and_junk_values_do_not_open() -> None:
    ring = new_keyring(NOW)
    sealer = ClickSealer(ring)
    value = sealer.seal(SHOWN, *WHERE)
    kid, blob = value.split(".")
    flipped = blob[:10] + ("A" if blob[10] != "A" else "B") + blob[11:]
    same_kid = Key(kid=kid, created=ring.signing_key.created, secret=secrets.token_bytes(SECRET_SIZE))
    foreign = ClickSealer(KeyRing([same_kid])).seal(SHOWN, *WHERE)  # another secret under our kid
    for junk in [
        f"{kid}.{flipped}",
        f"{kid}.{blob[:-4]}",
        f"{kid}.",
        f"nokid.{blob}",
        blob,
        "",
        ".",
        f"{kid}.{blob}!!",
        f"{kid}.%%%%",
        f"{kid}.{'A' * (MAX_SEALED_CHARS + 1)}",
        foreign,
    ]:
        assert sealer.open(junk, *WHERE) is None, junk


def test_seals_outlive_a_rotation_while_their_key_is_in_the_ring() -> None:
    ring = new_keyring(NOW)
    value = ClickSealer(ring).seal(SHOWN, *WHERE)
    rotated = rotate(ring, NOW + timedelta(days=1))
    sealer = ClickSealer(rotated)
    assert sealer.open(value, *WHERE) == SHOWN
    assert sealer.seal(SHOWN, *WHERE).split(".")[0] == rotated.signing_key.kid != value.split(".")[0]
    retired = remove(rotated, ring.signing_key.kid)
    assert ClickSealer(retired).open(value, *WHERE) is None
