"""Stored JSON values: no silent loss of big integers, nesting checked without recursion."""

from __future__ import annotations

import sys
from typing import Any

import orjson
import pytest

from app.ingest.import_rows import RowError, parse_jsonl_line
from app.ingest.values import MAX_VALUE_DEPTH, BadValue, BigInteger, check_value, loads


def nested_list(depth: int, leaf: Any = 1) -> Any:
    value = leaf
    for _ in range(depth):
        value = [value]
    return value


def nested_text(depth: int) -> bytes:
    return b'{"a": ' + b"[" * depth + b"1" + b"]" * depth + b"}"


@pytest.mark.parametrize(
    "literal", [b"18446744073709551616", b"-9223372036854775809", b"9223372036854775808", b"1" + b"0" * 40]
)
def test_integers_past_64_bits_are_marked_not_turned_into_floats(literal: bytes) -> None:
    # Attack/bug: orjson decodes 2**64 as 1.8446744073709552e19; stored, the sender's number is gone.
    data = loads(b'{"ok": 9223372036854775807, "big": [' + literal + b'], "text": "' + literal + b'"}')
    assert data["ok"] == 2**63 - 1 and data["text"] == literal.decode()
    assert isinstance(data["big"][0], BigInteger) and data["big"][0].literal == literal.decode()
    with pytest.raises(BadValue) as info:
        check_value(data, "payload")
    assert info.value.path == "payload.big[0]" and "signed 64 bits" in info.value.error


def test_floats_and_in_range_integers_are_left_alone() -> None:
    text = b'[1.8446744073709552e19, 12345678901234567890.5, -9223372036854775808, "\\"18446744073709551616"]'
    assert loads(text) == orjson.loads(text)
    check_value(loads(text), "v")


def test_marks_cannot_be_forged_by_the_sender() -> None:
    # Every call marks with a fresh random prefix: a string the sender wrote is a string.
    assert loads(b'["18446744073709551616", 18446744073709551616]')[0] == "18446744073709551616"


def test_depth_is_capped_without_recursion() -> None:
    check_value(nested_list(MAX_VALUE_DEPTH), "v")
    with pytest.raises(BadValue, match=f"deeper than {MAX_VALUE_DEPTH}"):
        check_value(nested_list(MAX_VALUE_DEPTH + 1), "v")
    # Far deeper than the interpreter's stack allows a recursive walk to go.
    deep = nested_list(sys.getrecursionlimit() * 3)
    with pytest.raises(BadValue) as info:
        check_value({"a": deep}, "payload")
    assert info.value.path == "payload.a" + "[0]" * (MAX_VALUE_DEPTH - 1)


def test_first_bad_value_in_document_order_is_reported() -> None:
    with pytest.raises(BadValue) as info:
        check_value({"a": 1, "b": [2, float("inf")], "c": 2**70}, "p")
    assert info.value.path == "p.b[1]"


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        (b'{"recipient_id": "r1", "n": 18446744073709551616}', "attributes.n: integers must be within"),
        (b'{"recipient_id": "r1", "attributes": {"l": ' + nested_text(253)[6:-1] + b"}}", "nests deeper"),
        (b'{"recipient_id": "r1", "x": ' + nested_text(1000) + b"}", "nests deeper"),
    ],
)
def test_imports_refuse_what_events_refuse(line: bytes, reason: str) -> None:
    with pytest.raises(RowError, match=reason) as info:
        parse_jsonl_line(line)
    assert info.value.recipient_id == "r1"
