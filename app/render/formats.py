"""Display formats: a value turned into the text a reader sees, once, on the server.

One formatter serves every place a value shows: the amp-list JSON (amp-mustache then only inserts
strings, it never formats), the send-time HTML and text parts and fragments (through the list blocks'
items, or the ``formatted`` Jinja filter). So the AMP part and the HTML part show the same text, and a
zero price is the non-empty string ``$0.00``, which ``{{#price}}`` in amp-mustache shows.

Specs (a list field's ``format`` in blocks.toml, the filter's argument):

    currency:USD     $1,234.50    ISO 4217 code: a symbol for common codes, else "CHF 1,234.50";
                                  the currency's decimals (0 for JPY, 3 for KWD, else 2)
    number           4,514        grouped; at most 3 decimals (1,234.5), as Intl.NumberFormat
    number:2         1,234.50     exactly that many decimals (0-6)
    percent          15%          of a fraction (0.15); percent:1 gives 15.0%
    date             March 7, 2025
    datetime         March 7, 2025, 9:30 AM CET
    date:%d.%m.%Y    07.03.2025   any strftime pattern
    iso              2025-03-07T08:30:00Z   ISO 8601 in UTC (the default of a datetime field)

Dates show in the recipient's time zone (``Zones``: a profile field the campaign names, when it holds
an IANA zone name, else the campaign's zone); a calendar date ("2025-03-07") stays that date. Amounts
round half-up on the decimal value the data wrote (2.675 gives 2.68), as shops print prices.
English month names and separators.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, tzinfo
from decimal import ROUND_HALF_UP, Context, Decimal
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from app.errors import OpentimeError


class FormatError(OpentimeError, ValueError):
    """A format spec or a time zone name cannot be used; the message says what is expected."""


Moment = datetime | date  # an aware datetime (an instant) or a calendar date
Render = Callable[[Any, tzinfo], str]
SPECS = "currency:<ISO code>, number[:decimals], percent[:decimals], date, datetime, date:<strftime>, iso"
MONTHS = (
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
)
# en-US symbols (CLDR) of common currencies; any other code is written before the amount.
SYMBOLS = {
    "USD": "$",
    "EUR": "€",
    "GBP": "£",
    "JPY": "¥",
    "CAD": "CA$",
    "AUD": "A$",
    "NZD": "NZ$",
    "HKD": "HK$",
    "MXN": "MX$",
    "BRL": "R$",
    "CNY": "CN¥",
    "INR": "₹",
    "KRW": "₩",
    "ILS": "₪",
    "VND": "₫",
}
DECIMALS = {code: 0 for code in ("JPY", "KRW", "VND", "CLP", "ISK", "PYG", "UGX", "XAF", "XOF")}
DECIMALS.update({code: 3 for code in ("BHD", "IQD", "JOD", "KWD", "LYD", "OMR", "TND")})
MAX_DECIMALS = 6
# Wide enough for any float (1.8e308) with its decimals: quantize never overflows the context.
_WIDE = Context(prec=400, rounding=ROUND_HALF_UP)
_QUANTUM = tuple(Decimal(1).scaleb(-places) for places in range(MAX_DECIMALS + 1))
_SPECS = tuple(f",.{places}f" for places in range(MAX_DECIMALS + 1))
_ZEROS = ("", *(f".{'0' * places}" for places in range(1, MAX_DECIMALS + 1)))
_ZONE_NAME = re.compile(r"[A-Za-z0-9_+-]+(?:/[A-Za-z0-9_+-]+){0,2}")


@dataclass(frozen=True, slots=True)
class Format:
    """A parsed spec: ``takes`` says which values it formats (numbers, or dates and times)."""

    spec: str
    takes: Literal["number", "datetime"]
    render: Render


@functools.lru_cache(maxsize=256)
def parse_format(spec: str) -> Format:
    """The format named by ``spec``; raises FormatError naming what is expected."""
    if not isinstance(spec, str):
        raise FormatError(f"a format must be a string ({SPECS})")
    name, colon, argument = spec.partition(":")
    if name == "currency" and colon:
        return Format(spec, "number", _memo(_currency(_currency_code(argument))))
    if name in ("number", "percent"):
        places = _places(argument, spec) if colon else None
        render = _number(places) if name == "number" else _percent(places or 0)
        return Format(spec, "number", _memo(render))
    if name == "date" and colon:
        return Format(spec, "datetime", _memo(_pattern(argument, spec)))
    moments: dict[str, Render] = {"date": _date, "datetime": _datetime, "iso": _iso}
    if name in moments and not colon:
        return Format(spec, "datetime", _memo(moments[name]))
    raise FormatError(f"unknown format {spec!r} (expected {SPECS})")


def _memo(render: Render) -> Render:
    """Catalogue prices and campaign dates repeat from one recipient to the next: a small cache per
    format answers them in ~0.2 µs instead of ~1-2.5 µs of rounding or zone arithmetic, on every cold
    render. ``typed``: 1 and 1.0 are different keys (a date and a datetime compare unequal anyway)."""
    memo: Render = functools.lru_cache(maxsize=1024, typed=True)(render)
    return memo


def format_value(value: Any, spec: str, zone: tzinfo = UTC) -> Any:
    """``value`` as ``spec`` writes it; a value the format cannot read (text, a missing price, an
    already formatted string) comes back unchanged. For templates: ``{{ x | formatted("number") }}``."""
    fmt = parse_format(spec)
    if fmt.takes == "number":
        return fmt.render(value, zone) if is_number(value) else value
    moment = to_moment(value)
    return value if moment is None else fmt.render(moment, zone)


def is_number(value: Any) -> bool:
    kind = type(value)
    return kind is int or (kind is float and math.isfinite(value))


def to_moment(value: Any) -> Moment | None:
    """An instant or a calendar date from ISO 8601 text or Unix seconds, else None.

    Text without a UTC offset is read as UTC; "2025-03-07" is a calendar date (no zone applies).
    """
    kind = type(value)
    if kind is str:
        return _parsed(value.strip())
    if kind is int or kind is float:
        try:
            return datetime.fromtimestamp(value, UTC)
        except (OverflowError, OSError, ValueError):  # NaN, infinities, years past 9999
            return None
    if isinstance(value, datetime):
        return value if value.tzinfo is not None else value.replace(tzinfo=UTC)
    return value if isinstance(value, date) else None


@dataclass(frozen=True, slots=True)
class Zones:
    """Where a recipient's dates show: the zone named at ``path`` in their profile, else ``default``."""

    default: tzinfo = UTC
    path: tuple[str, ...] = ()

    def of(self, attributes: Mapping[str, Any]) -> tzinfo:
        if not self.path:
            return self.default
        value: Any = attributes
        for key in self.path:
            if not isinstance(value, dict):
                return self.default
            value = value.get(key)
        own = zone_named(value) if type(value) is str else None
        return self.default if own is None else own


UTC_ONLY = Zones()  # every date in UTC: a campaign without zone settings


@functools.lru_cache(maxsize=512)
def zone_named(name: str) -> tzinfo | None:
    """The IANA zone ``name`` ("Europe/Berlin"), or None; profile data, so never a path or an error."""
    if len(name) > 64 or not _ZONE_NAME.fullmatch(name):
        return None
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        return None


def parse_zone(name: Any) -> tzinfo:
    """A configured zone name; raises FormatError."""
    zone = zone_named(name) if isinstance(name, str) else None
    if zone is None:
        raise FormatError(f"unknown time zone {name!r} (expected an IANA name like 'Europe/Berlin')")
    return zone


# --- numbers ------------------------------------------------------------------------------------------


def _places(argument: str, spec: str) -> int:
    if not argument.isdigit() or int(argument) > MAX_DECIMALS:
        raise FormatError(f"format {spec!r}: decimals must be a whole number from 0 to {MAX_DECIMALS}")
    return int(argument)


def _currency_code(code: str) -> str:
    if not re.fullmatch(r"[A-Z]{3}", code):
        raise FormatError(f"currency needs an ISO 4217 code in capitals, like currency:USD (got {code!r})")
    return code


def _fixed(value: int | float, places: int) -> str:
    """``value`` with ``places`` decimals and thousands separators, rounded half-up, never "-0.00"."""
    if type(value) is int:
        return f"{value:,}{_ZEROS[places]}"
    # repr is the shortest text that reads back as the same float: the decimal value the data wrote.
    written = repr(value)
    if "e" not in written and len(written) - written.index(".") <= places + 1:
        # Nothing to round (19.5 as $19.50): float formatting gives the same digits, without Decimal.
        return format(value + 0.0, _SPECS[places])  # + 0.0: -0.0 becomes 0.0
    amount = Decimal(written).quantize(_QUANTUM[places], context=_WIDE)
    return format(amount.copy_abs() if amount.is_zero() else amount, _SPECS[places])


def _currency(code: str) -> Render:
    symbol = SYMBOLS.get(code, f"{code}\u00a0")  # no-break space: "CHF 12.50" never breaks apart
    places = DECIMALS.get(code, 2)

    def render(value: Any, zone: tzinfo) -> str:
        if value < 0:
            text = _fixed(-value, places)
            return f"-{symbol}{text}" if text.strip("0.,") else f"{symbol}{text}"
        return f"{symbol}{_fixed(value, places)}"

    return render


def _number(places: int | None) -> Render:
    def render(value: Any, zone: tzinfo) -> str:
        if places is not None:
            return _fixed(value, places)
        text = _fixed(value, 0 if type(value) is int else 3)
        return text.rstrip("0").rstrip(".") if "." in text else text

    return render


def _percent(places: int) -> Render:
    def render(value: Any, zone: tzinfo) -> str:
        amount = Decimal(value if type(value) is int else repr(value)).scaleb(2)
        rounded = amount.quantize(_QUANTUM[places], context=_WIDE)
        return f"{rounded.copy_abs() if rounded.is_zero() else rounded:,.{places}f}%"

    return render


# --- dates and times ----------------------------------------------------------------------------------


def _parsed(text: str) -> Moment | None:
    try:
        if len(text) == 10:  # 2025-03-07: a calendar date, the same day everywhere
            return date.fromisoformat(text)
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def _local(moment: Moment, zone: tzinfo) -> Moment:
    return moment.astimezone(zone) if isinstance(moment, datetime) else moment


def _long(day: Moment) -> str:
    return f"{MONTHS[day.month - 1]} {day.day}, {day.year}"


def _date(moment: Moment, zone: tzinfo) -> str:
    return _long(_local(moment, zone))


def _datetime(moment: Moment, zone: tzinfo) -> str:
    local = _local(moment, zone)
    if not isinstance(local, datetime):
        return _long(local)
    hour = local.hour % 12 or 12
    noon = "AM" if local.hour < 12 else "PM"
    return f"{_long(local)}, {hour}:{local.minute:02d} {noon} {local.tzname()}"


def _iso(moment: Moment, zone: tzinfo) -> str:
    if not isinstance(moment, datetime):
        return moment.isoformat()
    return moment.astimezone(UTC).replace(tzinfo=None).isoformat() + "Z"


def _pattern(pattern: str, spec: str) -> Render:
    if not pattern or len(pattern) > 64 or "%" not in pattern:
        raise FormatError(f"format {spec!r}: give a strftime pattern after 'date:', like date:%d.%m.%Y")

    # Names (%B, %A) are English: Python leaves LC_TIME at the C locale unless told otherwise.
    def render(moment: Moment, zone: tzinfo) -> str:
        return _local(moment, zone).strftime(pattern)

    try:
        render(datetime(2025, 3, 7, 9, 30, tzinfo=UTC), UTC)
    except ValueError as exc:
        raise FormatError(f"format {spec!r}: {exc}") from None
    return render
