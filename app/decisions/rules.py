"""Targeting rules of a block (pure): ordered ``[[blocks.X.rules]]``, the first that matches chooses.

A rule is a set of conditions (all must hold) and what it chooses: ``variant = "name"`` or
``experiment = "name"`` (the recipient's assignment in that experiment). Conditions:

- ``after`` / ``before``: a local time of day (``"18:00"``) or a date and time (``"2026-12-24T18:00"``,
  in the recipient's zone; with an offset, ``"2026-12-24T18:00+01:00"``, an absolute moment).
  ``after`` holds from that moment on, ``before`` until it. Two times of day with ``after`` later than
  ``before`` are one overnight window (``after = "22:00"``, ``before = "06:00"``). Wall-clock times
  follow DST: "18:00" is 18:00 local on either side of a change. A local date-time inside the hour
  skipped in spring counts from the same wall time read with the old offset (02:30 in New York on the
  day clocks jump is 03:30 EDT); one inside the repeated hour in autumn means its first occurrence.
- ``weekdays``: ``["sat", "sun"]`` (the recipient's local day).
- ``fetch_class``, ``device``, ``country``: a value or a list of them.
- ``field`` (a dotted path into the profile) with ``equals = value``, ``in = [values]`` or
  ``exists = true|false``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, time
from typing import Any

from app.decisions.context import DEVICES, WEEKDAYS, OpenContext, valid_country
from app.errors import CampaignError
from app.open_time.fetch_class import FETCH_CLASSES

Test = Callable[[OpenContext], bool]
_TIME = re.compile(r"([01][0-9]|2[0-3]):([0-5][0-9])")
FETCH_VALUES = (*FETCH_CLASSES, "send", "preview")
RULE_KEYS = frozenset(
    {"after", "before", "weekdays", "fetch_class", "device", "country", "field", "equals", "in", "exists"}
    | {"variant", "experiment"}
)


@dataclass(frozen=True, slots=True)
class Rule:
    index: int  # position in the block's rules, for the preview's "why"
    tests: tuple[Test, ...]
    variant: str | None  # exactly one of variant and experiment
    experiment: str | None
    summary: str  # the rule as written, for the preview
    needs_profile: bool
    timed: bool  # reads the reader's wall clock (weekdays, times of day, local date-times): the zone matters

    def matches(self, context: OpenContext) -> bool:
        for test in self.tests:  # noqa: SIM110 - a loop, not all(<generator>): none per rule per open
            if not test(context):
                return False
        return True


def parse_rule(index: int, spec: Mapping[str, Any], where: str) -> Rule:
    unknown = sorted(set(spec) - RULE_KEYS)
    if unknown:
        raise CampaignError(f"{where}: unknown key(s) {', '.join(unknown)}")
    if ("variant" in spec) == ("experiment" in spec):
        raise CampaignError(f"{where}: a rule chooses either variant = ... or experiment = ...")
    tests: list[Test] = []
    window = _window(spec.get("after"), spec.get("before"), where)
    if window is not None:
        tests.append(window)
    if "weekdays" in spec:
        days = frozenset(_names(spec["weekdays"], WEEKDAYS, f"{where} weekdays"))
        tests.append(lambda c: c.weekday in days)
    if "fetch_class" in spec:
        classes = frozenset(_names(spec["fetch_class"], FETCH_VALUES, f"{where} fetch_class"))
        tests.append(lambda c: c.fetch_class in classes)
    if "device" in spec:
        devices = frozenset(_names(spec["device"], DEVICES, f"{where} device"))
        tests.append(lambda c: c.device in devices)
    if "country" in spec:
        countries = frozenset(_countries(spec["country"], f"{where} country"))
        tests.append(lambda c: c.country in countries)
    field_test = _field(spec, where)
    if field_test is not None:
        tests.append(field_test)
    chosen = spec.get("variant", spec.get("experiment"))
    if not isinstance(chosen, str) or not chosen:
        raise CampaignError(f"{where}: variant/experiment must name one")
    summary = ", ".join(f"{k} = {spec[k]!r}" for k in spec)
    return Rule(
        index,
        tuple(tests),
        spec.get("variant"),
        spec.get("experiment"),
        summary,
        field_test is not None,
        _zoned(spec),
    )


def _zoned(spec: Mapping[str, Any]) -> bool:
    """True when the rule reads the reader's wall clock: weekdays, a time of day, a date-time without
    an offset. A date-time with one is a moment, the same for every zone."""
    if "weekdays" in spec:
        return True
    for key in ("after", "before"):
        value = spec.get(key)
        if isinstance(value, str) and (_TIME.fullmatch(value) or _naive(value)):
            return True
        if isinstance(value, time) or (isinstance(value, datetime) and value.tzinfo is None):
            return True
    return False


def _naive(text: str) -> bool:
    try:
        return datetime.fromisoformat(text).tzinfo is None
    except ValueError:
        return False


def _window(after: Any, before: Any, where: str) -> Test | None:
    if after is None and before is None:
        return None
    start = None if after is None else _moment(after, f"{where} after")
    end = None if before is None else _moment(before, f"{where} before")
    if isinstance(start, time) or isinstance(end, time):
        if not (start is None or isinstance(start, time)) or not (end is None or isinstance(end, time)):
            raise CampaignError(f"{where}: after and before must both be times of day or both date-times")
        return _daily(start, end)
    return _dated(start, end)


def _daily(start: time | None, end: time | None) -> Test:
    # Microseconds since local midnight, compared as ints: no time object made per open.
    low, high = _of_day(start), _of_day(end)

    def within(context: OpenContext) -> bool:
        local = context.local
        now = (local.hour * 3600 + local.minute * 60 + local.second) * 1_000_000 + local.microsecond
        if low is not None and high is not None and low > high:  # overnight
            return now >= low or now < high
        return (low is None or now >= low) and (high is None or now < high)

    return within


def _of_day(moment: time | None) -> int | None:
    if moment is None:
        return None
    return (moment.hour * 3600 + moment.minute * 60 + moment.second) * 1_000_000 + moment.microsecond


def _dated(start: datetime | None, end: datetime | None) -> Test:
    def within(context: OpenContext) -> bool:
        return (start is None or context.at >= _instant(start, context)) and (
            end is None or context.at < _instant(end, context)
        )

    return within


def _instant(moment: datetime, context: OpenContext) -> float:
    """A naive date-time is the reader's wall clock (fold 0: the first of a repeated hour)."""
    if moment.tzinfo is None:
        return moment.replace(tzinfo=context.zone).timestamp()
    return moment.timestamp()


def _moment(value: Any, where: str) -> time | datetime:
    if isinstance(value, str):
        match = _TIME.fullmatch(value)
        if match:
            return time(int(match[1]), int(match[2]))
        try:
            return datetime.fromisoformat(value)
        except ValueError:
            pass
    elif isinstance(value, datetime):  # TOML date-times arrive parsed
        return value
    elif isinstance(value, time):
        return value.replace(tzinfo=None)
    raise CampaignError(f'{where}: expected "HH:MM" or a date-time such as "2026-12-24T18:00"')


def _names(value: Any, allowed: tuple[str, ...], where: str) -> list[str]:
    values = [value] if isinstance(value, str) else value
    if not isinstance(values, list) or not values or not all(isinstance(v, str) for v in values):
        raise CampaignError(f"{where}: expected a name or a list of names")
    wrong = [v for v in values if v not in allowed]
    if wrong:
        raise CampaignError(f"{where}: unknown {', '.join(wrong)} (one of: {', '.join(allowed)})")
    return values


def _countries(value: Any, where: str) -> list[str]:
    values = [value] if isinstance(value, str) else value
    if not isinstance(values, list) or not values or not all(isinstance(v, str) for v in values):
        raise CampaignError(f"{where}: expected a country code or a list of them")
    wrong = [v for v in values if not valid_country(v)]
    if wrong:
        raise CampaignError(f"{where}: {', '.join(wrong)} not ISO 3166 alpha-2 code(s) such as DE, US")
    return values


_ABSENT = object()


def _field(spec: Mapping[str, Any], where: str) -> Test | None:
    tests = [key for key in ("equals", "in", "exists") if key in spec]
    if "field" not in spec:
        if tests:
            raise CampaignError(f"{where}: {tests[0]} needs field = ...")
        return None
    path = spec["field"]
    if not isinstance(path, str) or not path or len(tests) != 1:
        raise CampaignError(f"{where}: field = 'dotted.path' with exactly one of equals, in, exists")
    keys = tuple(path.split("."))
    how = tests[0]
    if how == "exists":
        wanted = spec["exists"]
        if not isinstance(wanted, bool):
            raise CampaignError(f"{where}: exists must be true or false")
        return lambda c: (_lookup(c.profile, keys) is not _ABSENT) is wanted
    if how == "in":
        choices = spec["in"]
        if not isinstance(choices, list) or not choices:
            raise CampaignError(f"{where}: in must be a non-empty list")
        return lambda c: _lookup(c.profile, keys) in choices
    target = spec["equals"]
    return lambda c: _lookup(c.profile, keys) == target


def _lookup(profile: Mapping[str, Any] | None, keys: tuple[str, ...]) -> Any:
    value: Any = profile
    for key in keys:
        if not isinstance(value, Mapping) or key not in value:
            return _ABSENT
        value = value[key]
    return value
