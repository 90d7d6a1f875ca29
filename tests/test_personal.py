"""What counts as an email address in an id, and what the logs and the access log are allowed to keep."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from app.personal import has_at, redact_emails, redact_path
from app.security.keyring import new_keyring
from app.security.tokens import TokenSigner, TokenVerifier

# Every way an ESP export, a template or a URL may write the "@" of ann@example.com.
ADDRESSES = [
    "ann@example.com",
    "ann\uff20example.com",  # FULLWIDTH COMMERCIAL AT
    "ann\ufe6bexample.com",  # SMALL COMMERCIAL AT
    "ann%40example.com",
    "ann%2540example.com",  # encoded twice
    "ann%EF%BC%A0example.com",  # the full-width "@", UTF-8, percent-encoded
    "ann%ef%bc%a0example.com",
]
OPAQUE = ["cust-0000001", "8f14e45f-ceea-467f-a0e6-8d1c2f1c1a2b", "user_42", "x%41y", "100%", "a.b-c"]


@pytest.mark.parametrize("address", ADDRESSES)
def test_every_spelling_of_at_is_seen(address: str) -> None:
    assert has_at(address)


@pytest.mark.parametrize("recipient", OPAQUE)
def test_opaque_ids_are_not_addresses(recipient: str) -> None:
    assert not has_at(recipient)


@pytest.mark.parametrize("address", ADDRESSES)
def test_an_id_written_with_any_at_is_sealed(address: str) -> None:
    # Found by the adversarial pass: ids with a full-width "@" or "%40" went into URLs in
    # clear, since only a plain "@" made the signer seal the id.
    ring = new_keyring(datetime.now(UTC))
    now = int(datetime.now(UTC).timestamp())
    token = TokenSigner(ring).sign("demo", address, now=now)
    assert "example" not in token and "ann" not in token
    claims = TokenVerifier(ring).verify(token, now=now)
    assert (claims.recipient, claims.sealed) == (address, True)
    with pytest.raises(ValueError, match="must be sealed"):
        TokenSigner(ring).sign("demo", address, now=now, seal=False)


def test_opaque_ids_stay_unsealed() -> None:
    ring = new_keyring(datetime.now(UTC))
    now = int(datetime.now(UTC).timestamp())
    claims = TokenVerifier(ring).verify(TokenSigner(ring).sign("demo", "cust-1", now=now), now=now)
    assert (claims.recipient, claims.sealed) == ("cust-1", False)


@pytest.mark.parametrize("address", ADDRESSES)
def test_addresses_are_taken_out_of_log_text(address: str) -> None:
    text = redact_emails(f"lookup for {address} failed (id={address}, again: '{address}')")
    assert text == "lookup for <email> failed (id=<email>, again: '<email>')"


def test_text_without_an_address_is_left_alone() -> None:
    text = "open-time fallback store-error: list block demo/picks 100% of 3 (x%41)"
    assert redact_emails(text) == text


@pytest.mark.parametrize(
    ("path", "logged"),
    [
        ("/v1/AQAGYzc1YzA3aw6ehGs3fQ/list/picks.json", "/v1/…/list/picks.json"),
        ("/v1/e1.demo.k1.cust-1.0123abcd/img/banner.png", "/v1/…/img/banner.png"),
        ("/v1/AQAG/view", "/v1/…/view"),
        ("/api/customers/cust-1/personalization", "/api/customers/{id}/personalization"),
        ("/api/customers/ann%40example.com/personalization", "/api/customers/{id}/personalization"),
        ("/api/customers/ann\uff20example.com", "/api/customers/{id}"),
        (
            "/api/customers/cust-1/personalization?campaign=demo",
            "/api/customers/{id}/personalization?campaign=…",
        ),
        ("/preview/demo?recipient=cust-1&at=2026-01-01T00:00", "/preview/demo?recipient=…&at=…"),
        ("/preview/demo?recipient", "/preview/demo?recipient"),
        ("/nothing/ann@example.com/here", "/nothing/…/here"),
        ("/nothing/ann%2540example.com", "/nothing/…"),
        ("/x?ann%40example.com", "/x?…"),
        ("/healthz", "/healthz"),
        ("/webhooks/events", "/webhooks/events"),
    ],
)
def test_access_log_paths_keep_no_token_id_or_address(path: str, logged: str) -> None:
    assert redact_path(path) == logged
