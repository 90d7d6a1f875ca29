"""From and To addresses: one mailbox each, ASCII local parts, IDNA 2008 domains, clear errors."""

from __future__ import annotations

import re

import pytest

from app.errors import OpentimeError
from app.render.addresses import AddressError, Mailbox, parse_mailbox


@pytest.mark.parametrize(
    ("value", "header"),
    [
        ("ada@example.org", "ada@example.org"),
        ("  <ada@example.org>  ", "ada@example.org"),
        ("Ada Lovelace <Ada@Example.ORG>", "Ada Lovelace <Ada@example.org>"),
        ("Dr. Ada   King <ada@example.org>", '"Dr. Ada King" <ada@example.org>'),
        ('"Shop, Inc." <news@example.com>', '"Shop, Inc." <news@example.com>'),
        (r'"A \"quoted\" name" <a@example.com>', r'"A \"quoted\" name" <a@example.com>'),
        ("Zoë <zoe@bücher.example>", "Zoë <zoe@xn--bcher-kva.example>"),
        ("o'brien+tag@example.co.uk", "o'brien+tag@example.co.uk"),
    ],
)
def test_valid_addresses_become_one_mailbox(value: str, header: str) -> None:
    assert str(parse_mailbox(value)) == header


def test_domains_use_idna_2008_not_pythons_idna_2003_codec() -> None:
    # Python's "idna" codec maps ß to ss: faß.de would silently become fass.de, someone else's domain.
    assert "faß.de".encode("idna") == b"fass.de"
    assert parse_mailbox("a@faß.de") == Mailbox("", "a", "xn--fa-hia.de")
    assert parse_mailbox("a@BÜCHER.example").domain == "xn--bcher-kva.example"


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("", "is empty"),
        ("   ", "is empty"),
        ("ada", "is not an email address"),
        ("ada@", "is not an email address"),
        ("@example.org", "is not an email address"),
        ("zoë@example.com", "is not ASCII: Opentime does not write SMTPUTF8 messages"),
        ('"a b"@example.com', "quoted local part"),
        ("a..b@example.com", "separated by single dots"),
        ("a.@example.com", "separated by single dots"),
        ("a@b@example.com", "separated by single dots"),
        ("x" * 65 + "@example.com", "local part is longer than 64"),
        ("a@a_b.com", "is not a valid domain name"),
        ("a@-x.com", "is not a valid domain name"),
        ("a@☃.net", "is not a valid domain name"),  # IDNA 2003 accepted symbols
        ("a@xn--zz.com", "is not a valid domain name"),
        ("a@example..com", "is not a valid domain name"),
        ("a@example.com.", "needs a name and a top-level domain"),
        ("a@localhost", "needs a name and a top-level domain"),
        ("a@192.0.2.1", "needs a name and a top-level domain"),
        ("a@[192.0.2.1]", "domain literal"),
        ("a@example.com (comment)", "is not a valid domain name"),
        ("Ada <ada@example.org>, bo@example.org", "holds more than one address"),
        ("ada@example.org, bo@example.org", "holds more than one address"),
        ("Ada <ada@example.org", "without a closing '>'"),
        ("ada@example.org>", "without an opening '<'"),
        ("group: a@example.com;", "holds more than one address"),
        ("Shop, Inc. <news@example.com>", "quote a name that needs them"),
        ("a@" + "a" * 64 + ".com", "is not a valid domain name"),
        ("a@" + ".".join(["a" * 60] * 5) + ".com", "is not a valid domain name"),
        ("x" * 600, "is longer than 512 characters"),
        ("ada@example.org\r\nBcc: x@evil.example", "single line without control characters"),
        ("ada@example.org\u2028", "single line without control characters"),
        ("(" * 500, "is not an email address"),  # the stdlib parser recursed to a RecursionError
        ("=\\x @[ ", "separated by single dots"),  # the stdlib parser raised UnboundLocalError
    ],
)
def test_invalid_addresses_say_why(value: str, message: str) -> None:
    with pytest.raises(AddressError, match=re.escape(message)) as caught:
        parse_mailbox(value)
    assert isinstance(caught.value, OpentimeError) and "\n" not in str(caught.value)


def test_same_address_ignores_case_and_display_name() -> None:
    assert parse_mailbox("News <NEWS@Example.com>").same_address(parse_mailbox("news@example.com"))
    assert not parse_mailbox("news@example.com").same_address(parse_mailbox("news2@example.com"))
