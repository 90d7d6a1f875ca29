"""Parsing and validating import rows (pure): JSONL lines and CSV rows in, (recipient id, encoded
attributes) or a precise reason out. The file passes and loading live in ``app.ingest.importer``, whose
docstring gives the rules.
"""

from __future__ import annotations

import csv
import math
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, NamedTuple

import orjson

from app.errors import OpentimeError
from app.ingest.values import BadValue, check_value, loads

MAX_ID_LENGTH = 200
MAX_ATTRIBUTES_BYTES = 64 * 1024
FORMATS = ("jsonl", "csv")
_EXTENSIONS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".csv": "csv"}
_BAD_ID_CHARS = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]")  # control chars, undecodable bytes
_INT = re.compile(r"[+-]?[0-9]+")
_FLOAT = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_BOOLS = {"true": True, "1": True, "false": False, "0": False}


class RowError(OpentimeError, ValueError):
    """One row is invalid; ``reason`` is safe to show (it never quotes attribute values)."""

    def __init__(self, reason: str, recipient_id: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.recipient_id = recipient_id


class HeaderError(RowError):
    """The CSV header is unusable, so no row of the file can be read."""


class ImportFileError(OpentimeError, ValueError):
    """The file as a whole cannot be imported: unreadable, unknown format, or changed mid-import."""


@dataclass(frozen=True, slots=True)
class BadRow:
    line: int
    recipient_id: str | None
    reason: str


Record = tuple[int, str, bytes] | BadRow  # (line, recipient_id, encoded attributes)


# -- pure parsing ---------------------------------------------------------------------------------


def check_recipient_id(value: object) -> str:
    if not isinstance(value, str):
        raise RowError("recipient_id is not a string")
    if not value:
        raise RowError("recipient_id is empty")
    if len(value) > MAX_ID_LENGTH:
        raise RowError(f"recipient_id is longer than {MAX_ID_LENGTH} characters")
    if _BAD_ID_CHARS.search(value):
        raise RowError("recipient_id contains control characters or invalid UTF-8")
    if value != value.strip():
        raise RowError("recipient_id has leading or trailing whitespace")
    return value


def encode_attributes(attributes: dict[str, Any]) -> bytes:
    try:
        encoded = orjson.dumps(attributes, option=orjson.OPT_SORT_KEYS)
    except TypeError:
        raise RowError("attributes cannot be encoded (invalid UTF-8 or an integer beyond 64 bits)") from None
    if len(encoded) > MAX_ATTRIBUTES_BYTES:
        raise RowError(f"attributes are {len(encoded)} bytes encoded, over the {MAX_ATTRIBUTES_BYTES} limit")
    # orjson's result keeps a few KB of spare capacity; copying trims it before the row is kept.
    return bytes(memoryview(encoded))


def parse_jsonl_line(line: bytes) -> tuple[str, bytes]:
    """One JSONL line → ``(recipient_id, encoded attributes)``, or RowError."""
    try:
        obj = loads(line)
    except orjson.JSONDecodeError as exc:
        raise RowError(f"invalid JSON at column {exc.colno}: {exc.msg}") from None
    if not isinstance(obj, dict):
        raise RowError("line is not a JSON object")
    if "recipient_id" not in obj:
        raise RowError("missing recipient_id")
    recipient_id = check_recipient_id(obj.pop("recipient_id"))
    try:
        attributes = _jsonl_attributes(obj)
        _check(attributes, "attributes")
        return recipient_id, encode_attributes(attributes)
    except RowError as exc:
        exc.recipient_id = recipient_id
        raise


def _jsonl_attributes(obj: dict[str, Any]) -> dict[str, Any]:
    if "attributes" not in obj:
        return obj
    attributes = obj.pop("attributes")
    if obj:
        raise RowError(f"keys next to attributes (use one form or the other): {_names(obj)}")
    if not isinstance(attributes, dict):
        raise RowError("attributes is not a JSON object")
    return attributes


def _names(keys: Sequence[str] | dict[str, Any]) -> str:
    shown = sorted(repr(key[:40]) for key in keys)
    return ", ".join(shown[:5]) + (f" and {len(shown) - 5} more" if len(shown) > 5 else "")


def _to_int(cell: str) -> int:
    if not _INT.fullmatch(cell):
        raise ValueError("bad int")
    value = int(cell)
    if not -(2**63) <= value < 2**64:
        raise ValueError("int beyond 64 bits")
    return value


def _to_float(cell: str) -> float:
    if not _FLOAT.fullmatch(cell) or not math.isfinite(value := float(cell)):
        raise ValueError("bad float")
    return value


def _to_bool(cell: str) -> bool:
    try:
        return _BOOLS[cell.lower()]
    except KeyError:
        raise ValueError("bad bool (use true/false/1/0)") from None


def _to_json(cell: str) -> Any:
    try:
        value = loads(cell)
    except orjson.JSONDecodeError as exc:
        raise ValueError(f"invalid JSON at column {exc.colno} ({exc.msg})") from None
    try:
        check_value(value, "value")
    except BadValue as exc:
        raise ValueError(f"{exc.path} {exc.error}") from None
    return value


def _check(attributes: dict[str, Any], path: str) -> None:
    """Nesting and numbers as events allow them: an imported value must not fail later events."""
    try:
        check_value(attributes, path)
    except BadValue as exc:
        raise RowError(f"{exc.path}: {exc.error}") from None


_CASTS: dict[str, Callable[[str], Any] | None] = {
    "str": None,
    "int": _to_int,
    "float": _to_float,
    "bool": _to_bool,
    "json": _to_json,
}


class _Column(NamedTuple):  # a tuple: unpacked once per cell on the hot path
    position: int
    name: str
    header: str
    cast: Callable[[str], Any] | None  # None: a plain string


@dataclass(frozen=True, slots=True)
class CsvSchema:
    """The typed columns of a CSV file, read from its header row."""

    width: int
    id_index: int
    columns: tuple[_Column, ...]

    @classmethod
    def from_header(cls, header: Sequence[str]) -> CsvSchema:
        columns: list[_Column] = []
        id_index, names = -1, set()
        for index, raw in enumerate(header):
            column = _header_column(index, raw.strip())
            if column.name in names:
                raise HeaderError(f"duplicate column `{column.name}`")
            names.add(column.name)
            if column.name != "recipient_id":
                columns.append(column)
            elif column.header != "recipient_id":
                raise HeaderError("the recipient_id column takes no type suffix")
            else:
                id_index = index
        if id_index < 0:
            raise HeaderError("the header has no recipient_id column")
        return cls(len(header), id_index, tuple(columns))

    def parse_row(self, cells: Sequence[str]) -> tuple[str, bytes]:
        """One CSV record → ``(recipient_id, encoded attributes)``, or RowError."""
        if len(cells) != self.width:
            raise RowError(f"expected {self.width} cells, got {len(cells)}")
        recipient_id = check_recipient_id(cells[self.id_index])
        try:
            return recipient_id, encode_attributes(self._attributes(cells))
        except RowError as exc:
            exc.recipient_id = recipient_id
            raise

    def _attributes(self, cells: Sequence[str]) -> dict[str, Any]:
        attributes: dict[str, Any] = {}
        for index, name, header, cast in self.columns:
            cell = cells[index]
            if not cell:
                continue
            if cast is None:
                attributes[name] = cell
                continue
            try:
                attributes[name] = cast(cell)
            except ValueError as exc:
                raise RowError(f"{exc} in column `{header}`") from None
        return attributes


def _header_column(index: int, header: str) -> _Column:
    if not header:
        raise HeaderError(f"column {index + 1} has no name")
    if _BAD_ID_CHARS.search(header):
        raise HeaderError(f"column {index + 1} name contains control characters or invalid UTF-8")
    name, colon, suffix = header.rpartition(":")
    if not colon:
        return _Column(index, header, header, None)
    if suffix not in _CASTS:
        known = ", ".join(f":{s}" for s in _CASTS)
        raise HeaderError(f"unknown type suffix in column `{header}` (known: {known})")
    if not name:
        raise HeaderError(f"column {index + 1} has no name before its type suffix")
    return _Column(index, name, header, _CASTS[suffix])


# -- reading files --------------------------------------------------------------------------------


def detect_format(path: Path, fmt: str | None = None) -> str:
    """``jsonl`` or ``csv``, from ``fmt`` or the file name (``.gz`` is looked through)."""
    if fmt is not None:
        fmt = "jsonl" if fmt == "ndjson" else fmt
        if fmt not in FORMATS:
            raise ImportFileError(f"unknown format {fmt!r}; expected one of {', '.join(FORMATS)}")
        return fmt
    name = path.with_suffix("") if is_gzipped(path) else path
    found = _EXTENSIONS.get(name.suffix.lower())
    if found is None:
        raise ImportFileError(
            f"cannot tell the format of {path.name}: name it .jsonl, .ndjson or .csv (optionally .gz)"
            " or give the format explicitly"
        )
    return found


def is_gzipped(path: Path) -> bool:
    return path.suffix.lower() == ".gz"


def jsonl_records(stream: IO[bytes]) -> Iterator[Record]:
    for line_no, line in enumerate(stream, 1):
        if line_no == 1 and line.startswith(b"\xef\xbb\xbf"):
            line = line[3:]
        if not line or line.isspace():
            continue
        try:
            recipient_id, attributes = parse_jsonl_line(line)
        except RowError as exc:
            yield BadRow(line_no, exc.recipient_id, exc.reason)
        else:
            yield line_no, recipient_id, attributes


def csv_records(text: IO[str]) -> Iterator[Record]:
    reader = csv.reader(text, strict=True)
    try:
        schema = CsvSchema.from_header(next(reader))
    except StopIteration:
        raise HeaderError("the file is empty: a header row with a recipient_id column is required") from None
    except csv.Error as exc:
        raise HeaderError(f"CSV syntax error: {exc}") from None
    previous = reader.line_num
    while True:
        line = previous + 1  # where the record starts; quoted cells may span lines
        try:
            cells = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            yield BadRow(line, None, f"CSV syntax error: {exc}")
            if reader.line_num == previous:
                return
            previous = reader.line_num
            continue
        previous = reader.line_num
        if cells:
            yield _csv_record(schema, line, cells)


def _csv_record(schema: CsvSchema, line: int, cells: list[str]) -> Record:
    try:
        recipient_id, attributes = schema.parse_row(cells)
    except RowError as exc:
        return BadRow(line, exc.recipient_id, exc.reason)
    return line, recipient_id, attributes
