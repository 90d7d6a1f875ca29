"""Read a produced .eml back the way a mail client would, with two independent parsers.

``read_strict`` parses with Python's ``email.policy.default`` and fails on any defect (message, part
or header); ``assert_complete`` checks the headers every message must have; ``assert_mailparser_agrees``
parses the same bytes with npm ``mailparser`` and checks it reads the same headers and the same three
parts. Line ends are compared as ``\\n``: the message carries CRLF, as SMTP requires.
"""

from __future__ import annotations

import email
import email.policy
import re
from datetime import datetime
from email.message import EmailMessage
from typing import Any

import idna

from tests.node_tools import NodeTools

PART_TYPES = ["text/plain", "text/x-amp-html", "text/html"]
REQUIRED = ("Date", "From", "Subject", "Message-ID", "MIME-Version")


def read_strict(raw: bytes) -> EmailMessage:
    assert raw.isascii(), "a message without SMTPUTF8 must be 7-bit"
    assert all(len(line) <= 998 for line in raw.split(b"\r\n")), "RFC 5322 line limit"
    message = email.message_from_bytes(raw, policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    for part in message.walk():
        assert part.defects == [], part.defects
        for name, value in part.items():
            assert value.defects == (), (name, value.defects)
    return message


def assert_complete(message: EmailMessage, *, now: float, to: bool) -> None:
    """Date (close to ``now``), From, To when ``to``, Subject, Message-ID on the sender's domain."""
    for name in (*REQUIRED, "To") if to else REQUIRED:
        assert len(message.get_all(name) or []) == 1, f"{name} must appear exactly once"
    if not to:
        assert "To" not in message
    assert message["MIME-Version"] == "1.0"
    date = message["Date"].datetime
    assert date.tzinfo is not None and abs(date.timestamp() - now) < 120
    domain = message["From"].addresses[0].domain
    assert re.fullmatch(rf"<[^@<>\s]+@{re.escape(domain)}>", message["Message-ID"]), message["Message-ID"]
    assert message.get_content_type() == "multipart/alternative"
    assert [part.get_content_type() for part in message.iter_parts()] == PART_TYPES
    for part in message.iter_parts():
        assert part.get_content_charset() == "utf-8"
        assert "MIME-Version" not in part


def contents(message: EmailMessage) -> list[str]:
    """The text, AMP and HTML parts as decoded by Python."""
    return [lf(part.get_content()) for part in message.iter_parts()]


def lf(text: str) -> str:
    return text.replace("\r\n", "\n")


def assert_mailparser_agrees(node_tools: NodeTools, raws: list[bytes]) -> list[dict[str, Any]]:
    """mailparser reads the headers and the three parts of each message exactly as Python does (one
    node start for them all); returns what it read."""
    seen = node_tools.parse_emls(raws)
    for raw, one in zip(raws, seen, strict=True):
        _agrees(one, read_strict(raw))
    return seen


def _agrees(seen: dict[str, Any], message: EmailMessage) -> None:
    expected_headers = ["date", "from", "subject", "message-id", "mime-version", "content-type"]
    if "To" in message:
        expected_headers.append("to")
        assert seen["to"] == [_mailbox(message, "To")]
    assert sorted(seen["header_names"]) == sorted(expected_headers)
    assert seen["from"] == [_mailbox(message, "From")]
    assert seen["subject"] == str(message["Subject"])
    assert seen["message_id"] == message["Message-ID"]
    assert datetime.fromisoformat(seen["date"]) == message["Date"].datetime
    assert seen["mime_version"] == "1.0" and seen["content_type"] == "multipart/alternative"
    text, amp, html = contents(message)
    assert lf(seen["text"]) == text
    assert lf(seen["html"]) == html
    # mailparser knows no AMP: it hands text/x-amp-html over as an "attachment", bytes intact.
    assert [(o["content_type"], o["charset"]) for o in seen["others"]] == [("text/x-amp-html", "utf-8")]
    assert lf(seen["others"][0]["content"]) == amp


def _mailbox(message: EmailMessage, name: str) -> dict[str, str]:
    """A header's mailbox as mailparser reports it (it shows IDN domains in Unicode)."""
    address = message[name].addresses[0]
    return {"name": address.display_name, "address": f"{address.username}@{idna.decode(address.domain)}"}
