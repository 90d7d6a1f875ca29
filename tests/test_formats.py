"""Display formats (app.render.formats): what a reader sees for each kind of value."""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

import pytest

from app.render.formats import (
    FormatError,
    Zones,
    format_value,
    parse_format,
    parse_zone,
    to_moment,
    zone_named,
)

TOKYO = parse_zone("Asia/Tokyo")
NEW_YORK = parse_zone("America/New_York")


@pytest.mark.parametrize(
    ("spec", "value", "shown"),
    [
        ("currency:USD", 19.5, "$19.50"),
        ("currency:USD", 129, "$129.00"),
        ("currency:USD", 0, "$0.00"),  # a non-empty string: {{#price}} shows it
        ("currency:USD", 0.0, "$0.00"),
        ("currency:USD", -0.001, "$0.00"),  # never "-$0.00"
        ("currency:USD", 1234567.891, "$1,234,567.89"),
        ("currency:USD", 2.675, "$2.68"),  # half-up on the written value (float formatting says 2.67)
        ("currency:USD", 0.125, "$0.13"),
        ("currency:EUR", -5, "-€5.00"),
        ("currency:GBP", 7.1, "£7.10"),
        ("currency:JPY", 1234.5, "¥1,235"),  # no minor unit
        ("currency:KWD", 1.2345, "KWD\u00a01.235"),  # three decimals, code before the amount
        ("currency:CHF", 12.5, "CHF\u00a012.50"),
        ("number", 4514, "4,514"),
        ("number", 0, "0"),
        ("number", -1234, "-1,234"),
        ("number", 1234.5, "1,234.5"),
        ("number", 1234.5678, "1,234.568"),  # at most three decimals, as Intl.NumberFormat
        ("number", 0.1 + 0.2, "0.3"),
        ("number", 12.0, "12"),
        ("number:2", 3, "3.00"),
        ("number:0", 2.5, "3"),
        ("percent", 0.155, "16%"),
        ("percent", 1, "100%"),
        ("percent:1", 0.15, "15.0%"),
        ("percent", -0.001, "0%"),
    ],
)
def test_numbers(spec: str, value: float, shown: str) -> None:
    assert format_value(value, spec) == shown


def test_float_fast_path_agrees_with_decimal_rounding() -> None:
    import random
    from decimal import ROUND_HALF_UP, Decimal

    rng = random.Random(5)
    for _ in range(20_000):
        value = round(rng.uniform(-1e7, 1e7), rng.choice([0, 1, 2, 3, 4]))
        expected = Decimal(repr(value)).quantize(Decimal("0.01"), ROUND_HALF_UP)
        assert format_value(value, "number:2") == f"{abs(expected) if expected.is_zero() else expected:,.2f}"


@pytest.mark.parametrize(
    ("spec", "value", "zone", "shown"),
    [
        ("date", "2027-12-31T20:00:00Z", NEW_YORK, "December 31, 2027"),
        ("date", "2027-12-31T20:00:00Z", TOKYO, "January 1, 2028"),  # already the next day there
        ("date", "2027-12-31", TOKYO, "December 31, 2027"),  # a calendar date is the same day everywhere
        ("date", "2027-12-31T20:00:00", TOKYO, "January 1, 2028"),  # no offset: read as UTC
        ("date", "2027-12-31T20:00:00-05:00", UTC, "January 1, 2028"),
        ("date", 1_900_000_000, UTC, "March 17, 2030"),  # Unix seconds
        ("datetime", "2025-03-07T08:30:00Z", parse_zone("Europe/Berlin"), "March 7, 2025, 9:30 AM CET"),
        ("datetime", "2025-07-07T18:05:00Z", NEW_YORK, "July 7, 2025, 2:05 PM EDT"),
        ("datetime", "2025-07-07T04:00:00Z", UTC, "July 7, 2025, 4:00 AM UTC"),
        ("datetime", "2025-07-07T12:00:00Z", UTC, "July 7, 2025, 12:00 PM UTC"),
        ("datetime", "2025-07-07", TOKYO, "July 7, 2025"),
        ("date:%d.%m.%Y", "2027-12-31T20:00:00Z", TOKYO, "01.01.2028"),
        ("date:%A %d %B", "2025-03-07T12:00:00Z", UTC, "Friday 07 March"),
        ("iso", "2027-12-31T20:00:00-05:00", TOKYO, "2028-01-01T01:00:00Z"),
        ("iso", "2027-12-31", TOKYO, "2027-12-31"),
    ],
)
def test_dates_in_the_readers_zone(spec: str, value: Any, zone: Any, shown: str) -> None:
    assert format_value(value, spec, zone) == shown


@pytest.mark.parametrize("value", ["soon", "", "2027-13-01", None, True, [1], float("nan"), 1e300])
def test_values_a_format_cannot_read_come_back_unchanged(value: Any) -> None:
    assert to_moment(value) is None
    assert format_value(value, "date") is value


def test_text_already_formatted_is_left_alone() -> None:
    assert format_value("$19.50", "currency:USD") == "$19.50"
    assert format_value(True, "number") is True  # a bool is not a number
    assert format_value(float("inf"), "number") == float("inf")


def test_moments() -> None:
    assert to_moment("2025-03-07") == date(2025, 3, 7)
    assert to_moment(" 2025-03-07T08:30:00+01:00 ") == datetime(2025, 3, 7, 7, 30, tzinfo=UTC)
    assert to_moment(datetime(2025, 3, 7)) == datetime(2025, 3, 7, tzinfo=UTC)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("currency:usd", "ISO 4217"),
        ("currency", "unknown format"),
        ("number:9", "0 to 6"),
        ("percent:x", "0 to 6"),
        ("money", "unknown format"),
        ("date:", "strftime"),
        ("date:day", "strftime"),
        ("datetime:%H", "unknown format"),
    ],
)
def test_bad_specs_say_what_is_expected(spec: str, message: str) -> None:
    with pytest.raises(FormatError, match=message):
        parse_format(spec)


def test_zones() -> None:
    zones = Zones(NEW_YORK, ("prefs", "zone"))
    assert zones.of({"prefs": {"zone": "Asia/Tokyo"}}) is TOKYO
    for attributes in ({}, {"prefs": "x"}, {"prefs": {"zone": 3}}, {"prefs": {"zone": "Mars/Base"}}):
        assert zones.of(attributes) is NEW_YORK
    assert Zones().of({"zone": "Asia/Tokyo"}) is UTC


@pytest.mark.parametrize(
    "name", ["", "../../etc/passwd", "/etc/localtime", "America", "x" * 100, "Asia/Tokyo "]
)
def test_zone_names_from_profiles_are_never_paths_or_errors(name: str) -> None:
    # Attack: a profile's zone field names a file outside the zone database.
    assert zone_named(name) is None
    with pytest.raises(FormatError, match="IANA"):
        parse_zone(name)
