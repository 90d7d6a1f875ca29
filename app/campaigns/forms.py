"""amp-form blocks: the declaration in ``blocks.toml``, field validation and the stored payload (pure).

A ``form`` block declares its fields; a submission is validated against them, turned into a canonical
JSON payload (declared fields only, sorted keys) and identified by ``submission_id``, a SHA-256 over
campaign, block, recipient and that payload, so a re-submit of the same answers is recognised. An
optional ``profile`` table copies field values into the recipient's profile attributes.

Fields the form does not declare (``__amp_source_origin``, anything a client adds) are ignored and
never stored. There is no ``email`` type on purpose: forms collect no personal data by default.
"""

from __future__ import annotations

import hashlib
import itertools
import math
import re
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import orjson

from app.errors import CampaignError, OpentimeError

FormFieldType = Literal["text", "integer", "number", "bool", "choice"]
FORM_FIELD_TYPES: tuple[str, ...] = ("text", "integer", "number", "bool", "choice")
FIELD_NAME = re.compile(r"[a-z][a-z0-9_]{0,39}")
MAX_FIELDS = 20
MAX_TEXT_LENGTH = 2000
DEFAULT_TEXT_LENGTH = 500
MAX_CHOICES = 50
DEFAULT_SUCCESS_MESSAGE = "Thank you!"

_BLOCK_KEYS = frozenset({"kind", "success_message", "fields", "profile"})
_COMMON_KEYS = frozenset({"type", "required"})
_TYPE_KEYS: dict[str, frozenset[str]] = {
    "text": frozenset({"max_length"}),
    "integer": frozenset({"min", "max"}),
    "number": frozenset({"min", "max"}),
    "bool": frozenset(),
    "choice": frozenset({"choices", "multiple"}),
}
_INTEGER = re.compile(r"[+-]?[0-9]{1,15}")
_NUMBER = re.compile(r"[+-]?(?:[0-9]{1,15}(?:\.[0-9]{0,15})?|\.[0-9]{1,15})")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")  # tab and newline are fine in a comment
_TRUE = frozenset({"on", "true", "1", "yes"})
_FALSE = frozenset({"off", "false", "0", "no", ""})

AttrPath = tuple[str, ...]


@dataclass(frozen=True, slots=True)
class FormField:
    """One declared input of a form block."""

    name: str
    type: FormFieldType
    required: bool
    max_length: int = DEFAULT_TEXT_LENGTH
    min: float | None = None
    max: float | None = None
    choices: tuple[str, ...] = ()
    multiple: bool = False


@dataclass(frozen=True, slots=True)
class FormBlock:
    name: str
    fields: tuple[FormField, ...]
    success_message: str = DEFAULT_SUCCESS_MESSAGE
    profile: tuple[tuple[AttrPath, str], ...] = ()  # (attribute path, field name)


class InvalidSubmission(OpentimeError):
    """The submitted values do not match the declaration; ``errors`` maps field name to message."""

    def __init__(self, errors: Mapping[str, str]) -> None:
        super().__init__(", ".join(f"{name}: {message}" for name, message in errors.items()))
        self.errors = dict(errors)


class ProfileConflict(OpentimeError):
    """A profile path runs through an attribute that is not an object."""


# -- the declaration ------------------------------------------------------------------------------


def form_block(name: str, spec: dict[str, Any], where: str) -> FormBlock:
    """Parse ``[blocks.<name>]`` with ``kind = "form"``; errors name ``where`` (file and block)."""
    _no_unknown(spec, _BLOCK_KEYS, where)
    fields_spec = _table(spec.get("fields"), f"{where}.fields")
    if not 1 <= len(fields_spec) <= MAX_FIELDS:
        raise CampaignError(f"{where}.fields: declare from 1 to {MAX_FIELDS} fields")
    fields = tuple(_field(n, s, f"{where}.fields.{n}") for n, s in fields_spec.items())
    message = spec.get("success_message", DEFAULT_SUCCESS_MESSAGE)
    if not isinstance(message, str) or not 1 <= len(message) <= 500:
        raise CampaignError(f"{where}: success_message must be a string of 1 to 500 characters")
    profile = _profile(spec.get("profile", {}), {f.name for f in fields}, f"{where}.profile")
    return FormBlock(name, fields, message, profile)


def _field(name: str, spec: Any, where: str) -> FormField:
    if not FIELD_NAME.fullmatch(name):
        raise CampaignError(f"{where}: field names must match {FIELD_NAME.pattern}")
    spec = _table(spec, where)
    kind = spec.get("type", "text")
    if kind not in FORM_FIELD_TYPES:
        raise CampaignError(
            f"{where}: type must be one of {', '.join(FORM_FIELD_TYPES)} "
            "(there is no email type: forms collect no personal data)"
        )
    _no_unknown(spec, _COMMON_KEYS | _TYPE_KEYS[kind], where, f' for type "{kind}"')
    required = spec.get("required", kind != "bool")  # an unchecked box is an answer, not a gap
    if not isinstance(required, bool):
        raise CampaignError(f"{where}: required must be true or false")
    if kind == "text":
        length = spec.get("max_length", DEFAULT_TEXT_LENGTH)
        return FormField(name, kind, required, max_length=_max_length(length, where))
    if kind in ("integer", "number"):
        low, high = _bound(spec, "min", kind, where), _bound(spec, "max", kind, where)
        if low is not None and high is not None and low > high:
            raise CampaignError(f"{where}: min is greater than max")
        return FormField(name, kind, required, min=low, max=high)
    if kind == "choice":
        multiple = spec.get("multiple", False)
        if not isinstance(multiple, bool):
            raise CampaignError(f"{where}: multiple must be true or false")
        choices = _choices(spec.get("choices"), where)
        return FormField(name, kind, required, choices=choices, multiple=multiple)
    return FormField(name, kind, required)


def _bound(spec: dict[str, Any], key: str, kind: str, where: str) -> float | None:
    value = spec.get(key)
    if value is None:
        return None
    allowed = (int,) if kind == "integer" else (int, float)
    if isinstance(value, bool) or not isinstance(value, allowed) or not math.isfinite(value):
        raise CampaignError(f"{where}: {key} must be {'an integer' if kind == 'integer' else 'a number'}")
    return value


def _choices(value: Any, where: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not 1 <= len(value) <= MAX_CHOICES:
        raise CampaignError(f"{where}: choices must be a list of 1 to {MAX_CHOICES} strings")
    if not all(isinstance(c, str) and 1 <= len(c) <= 100 and c == c.strip() for c in value):
        raise CampaignError(f"{where}: each choice must be a non-empty string without surrounding spaces")
    if len(set(value)) != len(value):
        raise CampaignError(f"{where}: choices must be unique")
    return tuple(value)


def _profile(value: Any, fields: set[str], where: str) -> tuple[tuple[AttrPath, str], ...]:
    """``"a.b" = "field"`` or the nested ``a.b = "field"`` (TOML dotted keys): both mean path a.b."""
    pairs = list(_flatten(_table(value, where), (), where))
    for path, field_name in pairs:
        if field_name not in fields:
            raise CampaignError(f"{where}: {'.'.join(path)} names undeclared field {field_name!r}")
    paths = sorted(path for path, _ in pairs)
    for shorter, longer in itertools.pairwise(paths):
        if longer[: len(shorter)] == shorter:
            raise CampaignError(f"{where}: {'.'.join(shorter)} and {'.'.join(longer)} overlap")
    return tuple(pairs)


def _flatten(table: dict[str, Any], prefix: AttrPath, where: str) -> Iterable[tuple[AttrPath, str]]:
    for key, value in table.items():
        path = prefix + tuple(key.split("."))
        if "" in path:
            raise CampaignError(f"{where}: {key!r} is not a dotted attribute path")
        if isinstance(value, dict):
            yield from _flatten(value, path, where)
        elif isinstance(value, str):
            yield path, value
        else:
            raise CampaignError(f"{where}: {'.'.join(path)} must name a field (a string)")


def _no_unknown(spec: dict[str, Any], known: frozenset[str], where: str, suffix: str = "") -> None:
    unknown = sorted(set(spec) - known)
    if unknown:
        raise CampaignError(f"{where}: unknown key(s) {', '.join(unknown)}{suffix}")


def _table(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise CampaignError(f"{where}: expected a table")
    return value


def _max_length(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_TEXT_LENGTH:
        raise CampaignError(f"{where}: max_length must be an integer from 1 to {MAX_TEXT_LENGTH}")
    return value


# -- a submission ---------------------------------------------------------------------------------


def validate(block: FormBlock, pairs: Sequence[tuple[str, str]]) -> dict[str, Any]:
    """Validated values of every declared field (None, False or [] when absent); raise InvalidSubmission."""
    submitted: dict[str, list[str]] = {}
    for name, value in pairs:
        submitted.setdefault(name, []).append(value)
    values: dict[str, Any] = {}
    errors: dict[str, str] = {}
    for spec in block.fields:
        try:
            values[spec.name] = _value(spec, submitted.get(spec.name, []))
        except ValueError as exc:
            errors[spec.name] = str(exc)
    if errors:
        raise InvalidSubmission(errors)
    return values


def _value(spec: FormField, raw: list[str]) -> Any:
    if spec.type == "choice" and spec.multiple:
        return _multiple(spec, raw)
    if len(raw) > 1:
        raise ValueError("expects a single value")
    text = _clean(raw[0]) if raw else ""
    if spec.type == "bool":
        return _bool(spec, text)
    if not text:
        if spec.required:
            raise ValueError("is required")
        return None
    if spec.type == "text":
        if len(text) > spec.max_length:
            raise ValueError(f"must be at most {spec.max_length} characters")
        return text
    if spec.type == "choice":
        if text not in spec.choices:
            raise ValueError(f"must be one of: {', '.join(spec.choices)}")
        return text
    return _numeric(spec, text)


def _clean(value: str) -> str:
    text = unicodedata.normalize("NFC", value.replace("\r\n", "\n")).strip()
    if _CONTROL.search(text):
        raise ValueError("contains control characters")
    return text


def _bool(spec: FormField, text: str) -> bool:
    lowered = text.lower()
    if lowered not in _TRUE and lowered not in _FALSE:
        raise ValueError("must be checked or unchecked")
    if spec.required and lowered not in _TRUE:
        raise ValueError("must be checked")
    return lowered in _TRUE


def _multiple(spec: FormField, raw: list[str]) -> list[str]:
    chosen = {_clean(value) for value in raw} - {""}
    if not chosen.issubset(spec.choices):
        raise ValueError(f"must be among: {', '.join(spec.choices)}")
    if spec.required and not chosen:
        raise ValueError("choose at least one")
    return [choice for choice in spec.choices if choice in chosen]  # declaration order: canonical


def _numeric(spec: FormField, text: str) -> int | float:
    pattern, noun = (_INTEGER, "an integer") if spec.type == "integer" else (_NUMBER, "a number")
    in_range = False
    if pattern.fullmatch(text):
        number: int | float = int(text) if spec.type == "integer" else float(text)
        in_range = (spec.min is None or number >= spec.min) and (spec.max is None or number <= spec.max)
    if not in_range:
        raise ValueError(f"must be {noun}{_range(spec)}")
    if isinstance(number, float) and number.is_integer():
        return int(number)  # "4" and "4.0" are the same answer
    return number


def _range(spec: FormField) -> str:
    if spec.min is not None and spec.max is not None:
        return f" from {_num(spec.min)} to {_num(spec.max)}"
    if spec.min is not None:
        return f" of at least {_num(spec.min)}"
    return "" if spec.max is None else f" of at most {_num(spec.max)}"


def _num(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def canonical_payload(values: Mapping[str, Any]) -> bytes:
    """The stored JSON: sorted keys, so the same answers always give the same bytes."""
    return orjson.dumps(dict(values), option=orjson.OPT_SORT_KEYS)


def submission_id(campaign: str, block: str, recipient: str, payload: bytes) -> str:
    """SHA-256 (hex) identifying one answer; the JSON array keeps the parts from running together."""
    parts = orjson.dumps([campaign, block, recipient])
    return hashlib.sha256(parts + b"\n" + payload).hexdigest()


# -- profile updates ------------------------------------------------------------------------------


def profile_updates(block: FormBlock, values: Mapping[str, Any]) -> list[tuple[AttrPath, Any]]:
    """(path, value) to write; an absent optional answer (None) leaves the attribute alone."""
    return [(path, values[name]) for path, name in block.profile if values[name] is not None]


def check_paths(attributes: dict[str, Any], updates: Sequence[tuple[AttrPath, Any]]) -> None:
    """Raise ProfileConflict when a path would cross a value that is not an object."""
    for path, _ in updates:
        node: Any = attributes
        for key in path[:-1]:
            node = node.get(key, {})
            if not isinstance(node, dict):
                raise ProfileConflict(f"attribute {'.'.join(path)} crosses a value that is not an object")


def set_paths(attributes: dict[str, Any], updates: Sequence[tuple[AttrPath, Any]]) -> bool:
    """Set each path in ``attributes`` (creating objects on the way); return whether anything changed.

    Raise ProfileConflict, leaving ``attributes`` untouched, when a path crosses a non-object value.
    """
    check_paths(attributes, updates)
    changed = False
    for path, value in updates:
        node = attributes
        for key in path[:-1]:
            node = node.setdefault(key, {})
        # Compared as JSON: True == 1 in Python, but not in the stored profile.
        if path[-1] not in node or orjson.dumps(node[path[-1]]) != orjson.dumps(value):
            node[path[-1]] = value
            changed = True
    return changed
