"""Custom event types, declared in TOML (``event_types_file``) and validated at start-up.

Each type is a list of operations on profile paths: ``set`` (last-writer-wins per field, like
``profile.updated``; null deletes), ``increment`` and ``append`` (merged commutatively, like the
purchase counters and recent lists). The resolution rules are those of ``app.ingest.events``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from app.errors import OpentimeError
from app.ingest.events import (
    MAX_DEPTH,
    MAX_RECENTLY_VIEWED,
    RULES,
    Attributes,
    Event,
    FieldIndex,
    FieldTimes,
    Invalid,
    Rule,
    add_numbers,
    covered,
    dicts,
    newest_first,
    set_path,
    write_field,
)
from app.ingest.values import is_number

# -- custom types ----------------------------------------------------------------------------------
#
# Declared in TOML (``event_types_file``), validated at start-up, e.g.
#
#   [types."loyalty.points_earned"]
#   set = { "loyalty.last_earned_at" = "$occurred_at", "loyalty.tier" = "payload.tier" }
#   increment = { "loyalty.points" = "payload.points", "loyalty.earn_count" = 1 }
#   append = { "loyalty.history" = { from = "payload", max = 20 } }
#
# A source is "$occurred_at", "$id", "payload" (the whole payload) or "payload.<dotted path>"; an
# increment may also be a number. Sets are last-writer-wins per field like profile.updated (null
# deletes); increments and appends merge commutatively like the purchase counters and lists. Both
# skip a field that a newer set or delete covers, so a newer delete of ``loyalty`` is not undone.

CUSTOM_OPERATIONS = ("set", "increment", "append")
MAX_APPEND = 1000
_TYPE_NAME = re.compile(r"[a-z][a-z0-9_-]*(\.[a-z0-9_-]+)*\Z")
_FIELD_PART = re.compile(r"[A-Za-z0-9_-]{1,100}\Z")
_META_SOURCES = ("$occurred_at", "$id")


class EventTypesError(OpentimeError, ValueError):
    """The custom event types are malformed; the message names the type and the operation."""


@dataclass(frozen=True, slots=True)
class _Append:
    source: str
    max: int


@dataclass(frozen=True, slots=True)
class CustomType:
    """One declared type: target field (dotted path) → source, per operation."""

    sets: dict[str, str]
    increments: dict[str, str | int | float]
    appends: dict[str, _Append]

    def validate(self, payload: dict[str, Any]) -> None:
        _check_depth(payload)
        for source in [*self.sets.values(), *(a.source for a in self.appends.values())]:
            _source_value(source, payload, None)
        for amount in self.increments.values():
            if isinstance(amount, str) and not is_number(_source_value(amount, payload, None)):
                raise Invalid(amount, "must be a finite number")

    def apply(self, attributes: Attributes, times: FieldTimes, event: Event) -> None:
        index = FieldIndex(times)  # the fields of one type are never parent and child (checked at start)
        for path, source in self.sets.items():
            value = _source_value(source, event.payload, event)
            write_field(attributes, times, path, value, event.stamp, index)
        for path, amount in self.increments.items():
            if not covered(times, path, event.stamp):
                value = _source_value(amount, event.payload, event) if isinstance(amount, str) else amount
                set_path(attributes, path.split("."), _add(_get(attributes, path), value))
        for path, append in self.appends.items():
            if not covered(times, path, event.stamp):
                value = _source_value(append.source, event.payload, event)
                _append(attributes, path, value, append.max, event)


def with_custom_types(data: Any) -> dict[str, Rule]:
    """The built-in rules plus the types declared in a decoded TOML document; ``EventTypesError``."""
    if not isinstance(data, dict) or set(data) != {"types"} or not isinstance(data["types"], dict):
        raise EventTypesError('expected only a [types."<name>"] table per custom event type')
    rules = dict(RULES)
    for name, spec in data["types"].items():
        if name in RULES:
            raise EventTypesError(f"type {name!r}: a built-in type cannot be redefined")
        if not _TYPE_NAME.match(name) or len(name) > 100:
            raise EventTypesError(
                f"type {name!r}: names are lower-case words joined by dots, e.g. loyalty.earned"
            )
        try:
            custom = _custom_type(spec)
        except EventTypesError as exc:
            raise EventTypesError(f"type {name!r}: {exc}") from None
        rules[name] = Rule(custom.validate, custom.apply)
    return rules


def _custom_type(spec: Any) -> CustomType:
    if not isinstance(spec, dict) or not spec:
        raise EventTypesError(f"must be a table with at least one of {', '.join(CUSTOM_OPERATIONS)}")
    unknown = sorted(set(spec) - set(CUSTOM_OPERATIONS))
    if unknown:
        raise EventTypesError(f"unknown operation {unknown[0]!r}; use {', '.join(CUSTOM_OPERATIONS)}")
    tables = {op: _targets(op, spec.get(op, {})) for op in CUSTOM_OPERATIONS}
    paths = [path for table in tables.values() for path in table]
    for index, first in enumerate(paths):
        for second in paths[index + 1 :]:
            if first == second or second.startswith(first + ".") or first.startswith(second + "."):
                raise EventTypesError(f"field {second!r} is written twice (also as {first!r})")
    sets = {path: _string_source("set", path, source) for path, source in tables["set"].items()}
    increments = {path: _increment_source(path, source) for path, source in tables["increment"].items()}
    appends = {path: _append_spec(path, source) for path, source in tables["append"].items()}
    return CustomType(sets, increments, appends)


def _targets(op: str, table: Any) -> dict[str, Any]:
    if not isinstance(table, dict):
        raise EventTypesError(f'{op} must be a table of "field" = source')
    for path in table:
        parts = path.split(".")
        if len(parts) > MAX_DEPTH or not all(_FIELD_PART.match(part) for part in parts):
            raise EventTypesError(f"{op}.{path!r}: fields are dotted names of letters, digits, _ and -")
    return table


def _string_source(op: str, path: str, source: Any) -> str:
    if not isinstance(source, str) or not (
        source in (*_META_SOURCES, "payload") or (source.startswith("payload.") and _is_path(source[8:]))
    ):
        raise EventTypesError(
            f'{op}.{path!r}: the source must be "$occurred_at", "$id", "payload" or "payload.<field>"'
            f", got {source!r}"
        )
    return source


def _increment_source(path: str, source: Any) -> str | int | float:
    if is_number(source):
        return source  # type: ignore[no-any-return]
    if not (isinstance(source, str) and source.startswith("payload.") and _is_path(source[8:])):
        raise EventTypesError(f'increment.{path!r}: the amount must be a number or "payload.<field>"')
    return source


def _append_spec(path: str, spec: Any) -> _Append:
    if not isinstance(spec, dict) or set(spec) - {"from", "max"} or "from" not in spec:
        raise EventTypesError(f"append.{path!r}: must be {{ from = <source>, max = <1-{MAX_APPEND}> }}")
    size = spec.get("max", MAX_RECENTLY_VIEWED)
    if not isinstance(size, int) or isinstance(size, bool) or not 1 <= size <= MAX_APPEND:
        raise EventTypesError(f"append.{path!r}: max must be an integer from 1 to {MAX_APPEND}")
    return _Append(_string_source("append", path, spec["from"]), size)


def _is_path(text: str) -> bool:
    return all(_FIELD_PART.match(part) for part in text.split("."))


def _check_depth(payload: dict[str, Any], path: str = "payload", depth: int = 0) -> None:
    if depth > MAX_DEPTH:
        raise Invalid(path, f"nests deeper than {MAX_DEPTH} levels")
    for key, value in payload.items():
        if isinstance(value, dict):
            _check_depth(value, f"{path}.{key}", depth + 1)


def _source_value(source: str, payload: dict[str, Any], event: Event | None) -> Any:
    """The value of a source; raises ``Invalid`` when a payload field is missing (validation)."""
    if source in _META_SOURCES:
        return None if event is None else (event.occurred_at if source == "$occurred_at" else event.id)
    node: Any = payload
    for key in source.split(".")[1:]:
        if not isinstance(node, dict) or key not in node:
            raise Invalid(source, "is required by this event type")
        node = node[key]
    return node


def _get(attributes: Attributes, path: str) -> Any:
    node: Any = attributes
    for key in path.split("."):
        node = node.get(key) if isinstance(node, dict) else None
    return node


def _add(current: Any, amount: Any) -> int | float:
    total = add_numbers(current, amount)
    return total if isinstance(total, int) else round(total, 6)


def _append(attributes: Attributes, path: str, value: Any, size: int, event: Event) -> None:
    entry = {**value} if isinstance(value, dict) else {"value": value}
    entry.update(occurred_at=event.occurred_at, event_id=event.id)
    entries = newest_first([*dicts(_get(attributes, path)), entry], "occurred_at", "event_id")
    set_path(attributes, path.split("."), entries[:size])
