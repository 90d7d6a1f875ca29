"""The JSON values Opentime stores: decoded without silent loss, checked without recursion.

What is kept exactly. Profiles are stored as JSON text (SQLite) or ``jsonb`` (PostgreSQL) and read
back with orjson, which holds integers of 64 bits and IEEE doubles. PostgreSQL's ``numeric`` would keep
any integer, SQLite's JSON functions only signed 64 bits, and counters add to stored numbers, so the
one rule for every backend is: integers within signed 64 bits (-2^63 to 2^63-1), finite doubles.
orjson itself decodes an integer literal past 2^64 as a double (2^64 + 1 becomes 1.8446744073709552e19,
silently), so ``loads`` marks such literals and ``check_value`` refuses them with their path.

Nesting. orjson refuses documents deeper than 1,024 levels and cannot encode more than 254, and a
recursive walk of a deep value can exhaust the interpreter's stack (a 500). ``check_value`` walks with
an explicit stack and stops at ``MAX_VALUE_DEPTH`` levels, far below both.
"""

from __future__ import annotations

import math
import re
import secrets
from typing import Any

import orjson

from app.errors import OpentimeError

INT_MIN, INT_MAX = -(2**63), 2**63 - 1
MAX_VALUE_DEPTH = 32  # objects and lists inside one another, the checked value itself counting as one
_LONG_DIGITS = re.compile(rb"\d{19}")  # fewer digits always fit in signed 64 bits
# A JSON string, or a number: a string's digits are skipped, a number is matched whole.
_TOKEN = re.compile(rb'"(?:[^"\\]|\\.)*"|-?\d+(\.\d*)?([eE][+-]?\d+)?')
BIG_INTEGER_ERROR = "integers must be within signed 64 bits (-2^63 to 2^63-1); send larger ones as strings"
NUMBER_ERROR = "numbers must be finite; integers within signed 64 bits"


class BadValue(OpentimeError):
    """A value that cannot be stored as it was sent; ``path`` says where, e.g. ``payload.list[1].x``."""

    def __init__(self, path: str, error: str) -> None:
        super().__init__(f"{path}: {error}")
        self.path = path
        self.error = error


class BigInteger:
    """Stands for an integer literal outside signed 64 bits, so ``check_value`` can name its place."""

    __slots__ = ("literal",)

    def __init__(self, literal: str) -> None:
        self.literal = literal

    def __repr__(self) -> str:
        return f"BigInteger({self.literal})"


def loads(data: bytes | str) -> Any:
    """``orjson.loads``, with integer literals outside signed 64 bits decoded as ``BigInteger``."""
    decoded = orjson.loads(data)  # invalid JSON fails here, before any rewriting
    raw = data.encode() if isinstance(data, str) else data
    if _LONG_DIGITS.search(raw) is None:
        return decoded  # the common case: one C scan, nothing to mark
    marker = secrets.token_hex(16)  # a client cannot guess it, so cannot forge a mark
    marked = _TOKEN.sub(lambda m: _mark(m, marker), raw)
    return _unmark(orjson.loads(marked), marker)


def _mark(match: re.Match[bytes], marker: str) -> bytes:
    token = match[0]
    if token.startswith(b'"') or match[1] is not None or match[2] is not None:
        return token
    if INT_MIN <= int(token) <= INT_MAX:
        return token
    return b'"' + marker.encode() + token + b'"'


def _unmark(document: Any, marker: str) -> Any:
    root: list[Any] = [document]
    stack: list[Any] = [root]
    while stack:
        node = stack.pop()
        keys = list(node) if isinstance(node, dict) else range(len(node))
        for key in keys:
            child = node[key]
            if isinstance(child, dict | list):
                stack.append(child)
            elif isinstance(child, str) and child.startswith(marker):
                node[key] = BigInteger(child.removeprefix(marker))
    return root[0]


def is_number(value: Any) -> bool:
    """A finite float or an integer within signed 64 bits (what every store keeps exactly)."""
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return INT_MIN <= value <= INT_MAX
    return isinstance(value, float) and math.isfinite(value)


def check_value(value: Any, path: str, *, max_depth: int = MAX_VALUE_DEPTH) -> None:
    """Raise ``BadValue`` for a number the store cannot keep exactly or nesting past ``max_depth``."""
    stack: list[tuple[Any, str, int]] = [(value, path, 1)]
    while stack:
        node, where, depth = stack.pop()
        if isinstance(node, dict | list):
            if depth > max_depth:
                raise BadValue(where, f"nests deeper than {max_depth} levels of objects and lists")
            children = list(node.items() if isinstance(node, dict) else enumerate(node))
            # Reversed: the first bad value in document order is the one reported.
            stack.extend((child, _child_path(where, key), depth + 1) for key, child in reversed(children))
        elif isinstance(node, BigInteger):
            raise BadValue(where, BIG_INTEGER_ERROR)
        elif isinstance(node, int | float) and not isinstance(node, bool) and not is_number(node):
            raise BadValue(where, NUMBER_ERROR if isinstance(node, float) else BIG_INTEGER_ERROR)


def _child_path(path: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else key
