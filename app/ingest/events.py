"""Events: parsing and validation of webhook bodies, and the rules that apply an event to a profile.

Pure functions only: no I/O, no clock (``now`` is passed in). An event is
``{"id", "type", "recipient", "occurred_at" (RFC 3339), "payload"}``.

Resolution. Every event carries a stamp ``(occurred_at, id)``, a total order. Fields that an event
*sets* (``profile.updated`` leaves, ``cart.items``) are last-writer-wins per field: ``field_times`` maps
the field's dotted path to the stamp of its last write, and a write loses to a newer stamp on the
field itself, on one of its parents (a newer delete of ``loyalty`` beats an older set of
``loyalty.tier``) or on one of its children. Deletes leave their stamp behind as a tombstone, so a late
old event cannot bring a field back. Fields that events *accumulate* (``totals``, ``recent_purchases``,
``recently_viewed``) are merged commutatively: counters add (each event id is applied once, the store
guarantees it), bounded lists are kept sorted by occurred_at and cut, so arrival order does not matter.
"""

from __future__ import annotations

import math
import re
import sys
from bisect import bisect_left
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson

from app.errors import OpentimeError
from app.ingest.values import INT_MAX, INT_MIN, BadValue, check_value, is_number

Attributes = dict[str, Any]
FieldTimes = dict[str, list[str]]  # dotted path -> [occurred_at, event id]
Stamp = tuple[str, str]

MAX_EVENTS = 1000
MAX_ID_LENGTH = 200
MAX_FUTURE_SECONDS = 3600  # a far-future occurred_at would win every later write
MAX_RECENT_PURCHASES = 10
MAX_RECENTLY_VIEWED = 20
MAX_CART_ITEMS = 100
MAX_DEPTH = 8
MAX_FIELDS = 1000  # leaves per profile.updated: bounds the writer's work per event
EVENT_FIELDS = ("id", "type", "recipient", "occurred_at", "payload")
_RFC3339 = re.compile(
    r"\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(?P<fraction>\.\d+)?(?P<zone>[Zz]|[+-]\d{2}:\d{2})\Z"
)
_ITEM_FIELDS: dict[str, Callable[[Any], bool]] = {
    "sku": lambda v: isinstance(v, str) and 0 < len(v) <= 100,
    "name": lambda v: isinstance(v, str) and len(v) <= 200,
    "price": lambda v: is_number(v) and v >= 0,
    "qty": lambda v: isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= 10_000,
    "image": lambda v: isinstance(v, str) and len(v) <= 500,
    "url": lambda v: isinstance(v, str) and len(v) <= 500,
}
_ITEM_HELP = "sku: 1-100 chars; name: text; price: number >= 0; qty: integer 1-10000; image, url: text"


class BatchError(OpentimeError):
    """The body as a whole is unusable (not an event or a list of events)."""


class Invalid(OpentimeError):
    """One event is invalid: ``field`` is the dotted path inside the event, e.g. ``payload.items[0].sku``."""

    def __init__(self, field: str, error: str) -> None:
        super().__init__(f"{field}: {error}")
        self.field = field
        self.error = error


@dataclass(frozen=True, slots=True)
class Event:
    id: str
    type: str
    recipient: str
    occurred_at: str  # normalised: UTC, microseconds, e.g. 2024-05-01T10:00:00.000000Z
    payload: dict[str, Any]
    rule: Rule | None = field(default=None, compare=False, repr=False)  # None: the built-in of ``type``

    @property
    def stamp(self) -> Stamp:
        return (self.occurred_at, self.id)


@dataclass(frozen=True, slots=True)
class EventError:
    index: int
    field: str
    error: str
    id: str | None = None

    def as_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"index": self.index, "field": self.field, "error": self.error}
        if self.id is not None:
            data["id"] = self.id
        return data


# -- parsing -------------------------------------------------------------------------------------


def parse_batch(
    data: Any, *, now: float, rules: Mapping[str, Rule] | None = None
) -> tuple[list[tuple[int, Event]], list[EventError]]:
    """Split a decoded body into valid events (with their index) and per-event errors.

    ``rules`` are the known types (default: the built-ins; see ``with_custom_types``).
    """
    items = [data] if isinstance(data, dict) else data
    if not isinstance(items, list) or not items:
        raise BatchError("body must be an event object or a non-empty JSON array of events")
    if len(items) > MAX_EVENTS:
        raise BatchError(f"at most {MAX_EVENTS} events per request, got {len(items)}")
    events: list[tuple[int, Event]] = []
    errors: list[EventError] = []
    for index, item in enumerate(items):
        try:
            events.append((index, parse_event(item, now=now, rules=rules)))
        except Invalid as exc:
            event_id = item.get("id") if isinstance(item, dict) else None
            errors.append(EventError(index, exc.field, exc.error, event_id if _is_id(event_id) else None))
    return events, errors


def parse_event(item: Any, *, now: float, rules: Mapping[str, Rule] | None = None) -> Event:
    rules = RULES if rules is None else rules
    if not isinstance(item, dict):
        raise Invalid("event", "must be a JSON object")
    unknown = sorted(set(item) - set(EVENT_FIELDS))
    if unknown:
        raise Invalid(unknown[0], f"unknown field; an event has {', '.join(EVENT_FIELDS)}")
    for name in EVENT_FIELDS:
        if name not in item:
            raise Invalid(name, "is required")
        check_numbers(item[name], name)  # iteratively, before any rule walks the value
    for name in ("id", "recipient"):
        if not _is_id(item[name]):
            raise Invalid(name, f"must be 1-{MAX_ID_LENGTH} characters without control characters")
    rule = rules.get(item["type"]) if isinstance(item["type"], str) else None
    if rule is None:
        raise Invalid("type", f"must be one of {', '.join(rules)}")
    occurred_at = parse_time(item["occurred_at"], now=now)
    payload = item["payload"]
    if not isinstance(payload, dict):
        raise Invalid("payload", "must be a JSON object")
    rule.validate(payload)
    custom = None if RULES.get(item["type"]) is rule else rule
    return Event(item["id"], item["type"], item["recipient"], occurred_at, payload, custom)


def parse_time(value: Any, *, now: float) -> str:
    """RFC 3339 with a time zone, normalised to UTC with microseconds (sortable as text)."""
    match = _RFC3339.match(value) if isinstance(value, str) else None
    if match is None:
        raise Invalid("occurred_at", "must be an RFC 3339 time with a zone, e.g. 2024-05-01T10:00:00Z")
    fraction = (match["fraction"] or "")[:7]  # fromisoformat takes at most microseconds
    text = value[: match.start("fraction")] if match["fraction"] else value[: match.start("zone")]
    zone = "+00:00" if match["zone"] in "Zz" else match["zone"]
    try:
        moment = datetime.fromisoformat(text.replace("t", "T") + fraction + zone)
        timestamp, utc = moment.timestamp(), moment.astimezone(UTC)
    except (ValueError, OverflowError):  # e.g. 0001-01-01T00:00:00+01:00 is before year 1 in UTC
        raise Invalid("occurred_at", "is not a valid date and time") from None
    if timestamp > now + MAX_FUTURE_SECONDS:
        raise Invalid("occurred_at", f"is more than {MAX_FUTURE_SECONDS} s in the future")
    return utc.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _is_id(value: Any) -> bool:
    return (
        isinstance(value, str)
        and 0 < len(value) <= MAX_ID_LENGTH
        and not any(ord(c) < 32 or ord(c) == 127 for c in value)
    )


def check_numbers(value: Any, path: str) -> None:
    """Refuse a number the store could not save or add to, or nesting too deep, anywhere in ``value``."""
    try:
        check_value(value, path)
    except BadValue as exc:
        raise Invalid(exc.path, exc.error) from None


def add_numbers(current: Any, amount: int | float) -> int | float:
    """``current`` (0 unless a number) plus ``amount``, held within what the store can save."""
    total = (current if is_number(current) else 0) + amount
    if isinstance(total, int):
        return min(max(total, INT_MIN), INT_MAX)
    return total if math.isfinite(total) else math.copysign(sys.float_info.max, total)


def _check_item(item: Any, field: str) -> None:
    if not isinstance(item, dict):
        raise Invalid(field, "must be an object")
    for key, value in item.items():
        check = _ITEM_FIELDS.get(key)
        if check is None:
            raise Invalid(f"{field}.{key}", f"unknown field; items have {', '.join(_ITEM_FIELDS)}")
        if not check(value):
            raise Invalid(f"{field}.{key}", f"invalid value ({_ITEM_HELP})")
    if "sku" not in item:
        raise Invalid(f"{field}.sku", "is required")


def _check_items(payload: dict[str, Any], *, required: bool) -> None:
    items = payload.get("items")
    if items is None and not required:
        return
    if not isinstance(items, list) or len(items) > MAX_CART_ITEMS:
        raise Invalid("payload.items", f"must be a list of at most {MAX_CART_ITEMS} items")
    for index, item in enumerate(items):
        _check_item(item, f"payload.items[{index}]")


def _only(payload: dict[str, Any], allowed: tuple[str, ...]) -> None:
    unknown = sorted(set(payload) - set(allowed))
    if unknown:
        expected = ", ".join(allowed) if allowed else "no fields"
        raise Invalid(f"payload.{unknown[0]}", f"unknown field; expected {expected}")


# -- rules -----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Rule:
    validate: Callable[[dict[str, Any]], None]
    apply: Callable[[Attributes, FieldTimes, Event], None]  # mutates its (private) copies


def apply_event(
    attributes: Attributes, field_times: FieldTimes, event: Event
) -> tuple[Attributes, FieldTimes]:
    """The profile after ``event``: new objects, the arguments are left untouched."""
    # Copied one by one: wrapped in a list, a value stored at orjson's deepest level (254) would not
    # encode, and every later event of the recipient, even the null that deletes it, would fail.
    new_attributes = orjson.loads(orjson.dumps(attributes))
    new_times = orjson.loads(orjson.dumps(field_times))
    (event.rule or RULES[event.type]).apply(new_attributes, new_times, event)
    return new_attributes, new_times


# profile.updated: deep-merge the payload; null deletes; every leaf is last-writer-wins.


def _validate_profile(payload: dict[str, Any], path: str = "payload", depth: int = 0) -> None:
    if depth > MAX_DEPTH:
        raise Invalid(path, f"nests deeper than {MAX_DEPTH} levels")
    for key, value in payload.items():
        if not key or "." in key or len(key) > 100:
            raise Invalid(f"{path}.{key}", "keys are 1-100 characters without dots")
        if isinstance(value, dict) and value:
            _validate_profile(value, f"{path}.{key}", depth + 1)
    if depth == 0 and len(leaves := _leaves(payload)) > MAX_FIELDS:
        raise Invalid(path, f"sets {len(leaves)} fields; at most {MAX_FIELDS} per event")


def _apply_profile(attributes: Attributes, times: FieldTimes, event: Event) -> None:
    index = FieldIndex(times)  # leaves are never parent and child of each other: one index serves all
    for path, value in _leaves(event.payload):
        write_field(attributes, times, path, value, event.stamp, index)


def _leaves(data: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    leaves: list[tuple[str, Any]] = []
    for key, value in data.items():
        path = prefix + key
        if isinstance(value, dict) and value:
            leaves += _leaves(value, path + ".")
        else:
            leaves.append((path, value))
    return leaves


# purchase: bounded recent_purchases (newest first), totals, last_purchase.


def _validate_purchase(payload: dict[str, Any]) -> None:
    _only(payload, ("order_id", "total", "currency", "items"))
    if "order_id" in payload and not _is_id(payload["order_id"]):
        raise Invalid("payload.order_id", f"must be 1-{MAX_ID_LENGTH} characters")
    if not is_number(payload.get("total")) or payload["total"] < 0:
        raise Invalid("payload.total", "is required: a number >= 0")
    currency = payload.get("currency")
    if currency is not None and not (isinstance(currency, str) and re.fullmatch(r"[A-Z]{3}", currency)):
        raise Invalid("payload.currency", "must be a three-letter ISO 4217 code such as EUR")
    _check_items(payload, required=False)


def _apply_purchase(attributes: Attributes, times: FieldTimes, event: Event) -> None:
    order_id = event.payload.get("order_id", event.id)
    recent = dicts(attributes.get("recent_purchases"))
    if any(p.get("order_id") == order_id for p in recent):
        return  # the same order reported again under another event id
    entry = {"order_id": order_id, **event.payload, "occurred_at": event.occurred_at}
    recent = newest_first([*recent, entry], "occurred_at", "order_id")[:MAX_RECENT_PURCHASES]
    totals = attributes.get("totals")
    totals = totals if isinstance(totals, dict) else {}
    orders = totals.get("orders")
    totals["orders"] = add_numbers(orders if isinstance(orders, int) else 0, 1)
    totals["spent"] = round(add_numbers(totals.get("spent"), event.payload["total"]), 2)
    attributes.update(recent_purchases=recent, totals=totals, last_purchase=recent[0])


# cart.updated / cart.cleared: cart.items, last-writer-wins.


def _validate_cart(payload: dict[str, Any]) -> None:
    _only(payload, ("items",))
    _check_items(payload, required=True)


def _validate_empty(payload: dict[str, Any]) -> None:
    _only(payload, ())


def _apply_cart(attributes: Attributes, times: FieldTimes, event: Event) -> None:
    write_field(attributes, times, "cart.items", event.payload.get("items", []), event.stamp)


# product.viewed: bounded recently_viewed, newest first, one entry per sku.


def _validate_viewed(payload: dict[str, Any]) -> None:
    _check_item(payload, "payload")


def _apply_viewed(attributes: Attributes, times: FieldTimes, event: Event) -> None:
    entry = {**event.payload, "viewed_at": event.occurred_at}
    views = newest_first([*dicts(attributes.get("recently_viewed")), entry], "viewed_at", "sku")
    unique: dict[Any, dict[str, Any]] = {}
    for view in views:
        unique.setdefault(view.get("sku"), view)  # the newest view of each sku
    attributes["recently_viewed"] = list(unique.values())[:MAX_RECENTLY_VIEWED]


RULES: dict[str, Rule] = {
    "profile.updated": Rule(_validate_profile, _apply_profile),
    "purchase": Rule(_validate_purchase, _apply_purchase),
    "cart.updated": Rule(_validate_cart, _apply_cart),
    "cart.cleared": Rule(_validate_empty, _apply_cart),
    "product.viewed": Rule(_validate_viewed, _apply_viewed),
}


# -- last-writer-wins fields -----------------------------------------------------------------------


class FieldIndex:
    """The paths of ``field_times`` in order, so a path's children are found without a full scan.

    A snapshot: it serves writes that are not parent and child of each other (one event's fields).
    """

    def __init__(self, times: FieldTimes) -> None:
        self._keys = sorted(times)

    def children(self, times: FieldTimes, path: str) -> list[str]:
        # Every "<path>.<more>" sorts between "<path>." and "<path>/" ("/" follows "." in ASCII).
        start, end = bisect_left(self._keys, path + "."), bisect_left(self._keys, path + "/")
        return [key for key in self._keys[start:end] if key in times]


def write_field(
    attributes: Attributes,
    times: FieldTimes,
    path: str,
    value: Any,
    stamp: Stamp,
    index: FieldIndex | None = None,
) -> bool:
    """Set (or, for None, delete) ``path`` unless a newer write covers it; True if applied."""
    parts = path.split(".")
    if covered(times, path, stamp):
        return False
    if index is None:
        children = [key for key in times if key.startswith(path + ".")]
    else:
        children = index.children(times, path)
    if any(_stamp(times[key]) > stamp for key in children):
        return False
    for key in children:
        del times[key]  # covered by this write from now on
    times[path] = list(stamp)
    if value is None:
        _delete(attributes, parts)
    else:
        set_path(attributes, parts, value)
    return True


def covered(times: FieldTimes, path: str, stamp: Stamp) -> bool:
    """Did a write at least as new as ``stamp`` set or delete ``path`` or one of its parents?"""
    parts = path.split(".")
    return any(_stamp(times.get(".".join(parts[:i]))) >= stamp for i in range(1, len(parts) + 1))


def _stamp(value: Any) -> Stamp:
    if isinstance(value, list) and len(value) == 2 and all(isinstance(v, str) for v in value):
        return (value[0], value[1])
    return ("", "")  # none, or unreadable: older than any event


def set_path(attributes: Attributes, parts: list[str], value: Any) -> None:
    node = attributes
    for key in parts[:-1]:
        child = node.get(key)
        if not isinstance(child, dict):
            child = node[key] = {}
        node = child
    node[parts[-1]] = value


def _delete(attributes: Attributes, parts: list[str]) -> None:
    node: Any = attributes
    for key in parts[:-1]:
        node = node.get(key)
        if not isinstance(node, dict):
            return
    node.pop(parts[-1], None)


def dicts(value: Any) -> list[dict[str, Any]]:
    return [v for v in value if isinstance(v, dict)] if isinstance(value, list) else []


def newest_first(entries: list[dict[str, Any]], time_key: str, tie_key: str) -> list[dict[str, Any]]:
    return sorted(entries, key=lambda e: (str(e.get(time_key, "")), str(e.get(tie_key, ""))), reverse=True)
