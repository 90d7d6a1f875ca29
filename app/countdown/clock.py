"""Countdown timers: deadline arithmetic and time buckets (pure; the pixels are ``app.images.timer``).

Deadlines are instants. A deadline is either fixed for the campaign or read from a profile value, written
as ISO 8601 with a UTC offset (``2026-12-24T18:00+01:00``, ``...Z``) or as a local wall time plus an IANA
zone (``2026-12-24T18:00`` in ``Europe/Berlin``). Local wall times become instants through ``zoneinfo``,
and remaining time is always computed between two aware instants, so a countdown across a DST change is
exact (23 or 25 hours in a day, never a naive subtraction of wall times).

Local times that a DST change skips or repeats follow RFC 5545 (iCalendar) section 3.3.5, which is what
calendar users already expect, and which is PEP 495's ``fold=0``:

- a time in the spring-forward gap (``02:30`` on 2026-03-29 in Berlin) is read with the offset in force
  *before* the gap, so it lands as far after the gap's start as it was written: 03:30 CEST;
- a time in the fall-back overlap (``02:30`` on 2026-10-25 in Berlin) is its *first* occurrence (CEST).

What a timer shows is ``seconds_left(deadline, now)``: whole seconds (floored), or None from the deadline
on. The pixels depend on that number only (``app.images.timer_gif``), so it is the timer's content key:
every request with the same number of seconds left, whatever its deadline, gets the same bytes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import NamedTuple
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from app.errors import OpentimeError

MAX_DAYS = 999
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)
_SECOND = timedelta(seconds=1)


class CountdownError(OpentimeError, ValueError):
    """Base class for countdown errors; the message says which value is wrong and why."""


class DeadlineError(CountdownError):
    """A deadline (fixed or from a profile) or its time zone cannot be read."""


class StyleError(CountdownError):
    """A countdown style is invalid, or its font cannot be loaded or does not fit the image."""


# --- deadlines --------------------------------------------------------------------------------------------


def get_zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise DeadlineError(
            f"unknown time zone {name!r} (expected an IANA name like 'Europe/Berlin')"
        ) from None


def resolve_local(wall: datetime, tz: ZoneInfo) -> datetime:
    """The UTC instant of a naive local wall time: gaps use the offset before them, overlaps the first."""
    return wall.replace(tzinfo=tz, fold=0).astimezone(UTC)


def parse_deadline(value: str, tz: str | None = None) -> datetime:
    """Parse an ISO 8601 deadline into a UTC instant.

    An explicit UTC offset in ``value`` wins over ``tz``; a value without one needs ``tz``.
    """
    text = value.strip()
    if len(text) <= 10:
        raise DeadlineError(f"deadline {value!r} needs a time of day, e.g. '2026-12-24T18:00'")
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise DeadlineError(f"deadline {value!r} is not an ISO 8601 date and time") from None
    try:
        if parsed.tzinfo is not None:
            return parsed.astimezone(UTC)
        if tz is None:
            raise DeadlineError(f"deadline {value!r} has no UTC offset and no time zone is configured")
        return resolve_local(parsed, get_zone(tz))
    except OverflowError:
        # 0001-01-01T00:00+01:00 is a valid ISO 8601 text whose UTC instant is before year 1.
        raise DeadlineError(f"deadline {value!r} is outside the years 1 to 9999 in UTC") from None


@dataclass(frozen=True, slots=True)
class DeadlineSource:
    """Where a countdown's deadline comes from: ``at`` (fixed for the campaign) or a profile ``field``.

    ``zone`` applies to values without a UTC offset; ``zone_field`` names a profile value holding the
    recipient's own zone, which overrides ``zone`` when present.
    """

    at: str | None = None
    field: str | None = None
    zone: str | None = None
    zone_field: str | None = None

    def __post_init__(self) -> None:
        if (self.at is None) == (self.field is None):
            raise DeadlineError("a countdown deadline needs exactly one of 'at' or 'field'")
        if self.zone is not None:
            get_zone(self.zone)
        if self.at is not None:
            parse_deadline(self.at, self.zone)

    @property
    def shared(self) -> bool:
        """True when every recipient sees the same timer (one render per bucket for all)."""
        return self.at is not None

    def resolve(self, profile: Mapping[str, object] | None = None) -> datetime:
        if self.at is not None:
            return parse_deadline(self.at, self.zone)
        assert self.field is not None
        return deadline_from_profile(profile or {}, self.field, self._zone_for(profile or {}))

    def _zone_for(self, profile: Mapping[str, object]) -> str | None:
        own = profile.get(self.zone_field) if self.zone_field else None
        if own is None or own == "":
            return self.zone
        if not isinstance(own, str):
            raise DeadlineError(f"profile field {self.zone_field!r} must be a time zone name")
        return own


def deadline_from_profile(profile: Mapping[str, object], field: str, tz: str | None = None) -> datetime:
    if field not in profile or profile[field] is None:
        raise DeadlineError(f"profile has no deadline field {field!r}")
    value = profile[field]
    if not isinstance(value, str):
        raise DeadlineError(f"profile field {field!r} must be an ISO 8601 string, not {type(value).__name__}")
    try:
        return parse_deadline(value, tz)
    except DeadlineError as exc:
        raise DeadlineError(f"profile field {field!r}: {exc}") from None


class Remaining(NamedTuple):
    days: int
    hours: int
    minutes: int
    seconds: int


def require_aware(**instants: datetime) -> None:
    for name, value in instants.items():
        if value.tzinfo is None or value.utcoffset() is None:
            raise DeadlineError(f"{name} must be timezone-aware (an instant), got naive {value.isoformat()}")


def remaining_seconds(deadline: datetime, now: datetime) -> int:
    """Whole seconds from ``now`` to ``deadline`` (floored, never negative)."""
    require_aware(deadline=deadline, now=now)
    return max(0, (deadline - now) // _SECOND)


def split_seconds(total: int) -> Remaining:
    minutes, seconds = divmod(total, 60)
    hours, minutes = divmod(minutes, 60)
    days, hours = divmod(hours, 24)
    return Remaining(days, hours, minutes, seconds)


def remaining(deadline: datetime, now: datetime) -> Remaining:
    return split_seconds(remaining_seconds(deadline, now))


def seconds_left(deadline: datetime, now: datetime) -> int | None:
    """Whole seconds from ``now`` to ``deadline`` (floored), or None from the deadline on (it has passed).

    Showing the floor is at most one second off at the moment of the request: the true time left is in
    ``[left, left + 1)``. At the last second (``0 <= deadline - now < 1``) it is 0, not None.
    """
    require_aware(deadline=deadline, now=now)
    return left_at(instant_us(deadline), instant_us(now))


def instant_us(moment: datetime) -> int:
    """Microseconds since the Unix epoch: an instant as an exact integer (a float timestamp is not)."""
    require_aware(instant=moment)
    return (moment - _EPOCH) // _MICROSECOND


def clock_us(seconds: float) -> int:
    """A clock reading (``time.time()``) in microseconds, rounded as ``datetime.fromtimestamp`` does."""
    return round(seconds * 1_000_000)


def left_at(deadline_us: int, now_us: int) -> int | None:
    """``seconds_left`` on microsecond instants: the open-time path's form, without datetimes."""
    return None if now_us >= deadline_us else (deadline_us - now_us) // 1_000_000
