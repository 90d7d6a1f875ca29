"""The report's arithmetic against a hand-computed example, and how a report is built from counters."""

from __future__ import annotations

import pytest

from app.reports.report import as_json, build, control_of, parse_time
from app.reports.stats import Z95, two_proportion_test, wilson
from app.reports.table import as_text
from app.store.base import ExposureCount

HOUR = 1_714_557_600  # 2024-05-01T10:00:00Z

# The worked example, by hand (z = 1.959964, z^2 = 3.841459):
#   control a: 50 clicks of 1000 exposures, p = 0.05; variant b: 80 of 1000, p = 0.08.
#   Wilson: centre = (p + z^2/2n) / (1 + z^2/n), half = z * sqrt(p(1-p)/n + z^2/4n^2) / (1 + z^2/n)
#     a: z^2/n = 0.0038415; centre = 0.0519207 / 1.0038415 = 0.0517220
#        half = 1.959964 * sqrt(0.0000475 + 0.00000096) / 1.0038415 = 0.0135918 -> [0.0381, 0.0653]
#     b: centre = 0.0819207 / 1.0038415 = 0.0816072
#        half = 1.959964 * sqrt(0.0000736 + 0.00000096) / 1.0038415 = 0.0168592 -> [0.0647, 0.0985]
#   Pooled z-test: pooled p = 130 / 2000 = 0.065; se = sqrt(0.065 * 0.935 * (1/1000 + 1/1000)) = 0.0110250
#     z = (0.08 - 0.05) / 0.0110250 = 2.7211; two-sided p = erfc(2.7211 / sqrt 2) = 0.0065


def test_wilson_interval_of_the_worked_example() -> None:
    assert round(Z95, 6) == 1.959964
    low, high = wilson(50, 1000)
    assert (round(low, 4), round(high, 4)) == (0.0381, 0.0653)
    assert (low + high) / 2 == pytest.approx(0.0517220, abs=1e-7)
    low, high = wilson(80, 1000)
    assert (round(low, 4), round(high, 4)) == (0.0647, 0.0985)
    assert (high - low) / 2 == pytest.approx(0.0168592, abs=1e-7)


def test_z_test_of_the_worked_example() -> None:
    test = two_proportion_test(50, 1000, 80, 1000)
    assert test is not None
    assert round(test.z, 4) == 2.7211
    assert round(test.p_value, 4) == 0.0065
    # Symmetric: the other way round, the same p and the opposite z.
    other = two_proportion_test(80, 1000, 50, 1000)
    assert (
        other is not None
        and other.z == pytest.approx(-test.z)
        and other.p_value == pytest.approx(test.p_value)
    )


def test_edges_no_trials_no_variation_and_zero_rates() -> None:
    assert wilson(0, 0) == (0.0, 1.0)
    low, high = wilson(0, 10)
    assert low == 0.0 and round(high, 4) == 0.2775  # z^2/(n+z^2) = 3.8415 / 13.8415
    low, high = wilson(10, 10)
    assert round(low, 4) == 0.7225 and high == pytest.approx(1.0)
    assert two_proportion_test(0, 100, 0, 100) is None  # nobody clicked anywhere: nothing to test
    assert two_proportion_test(5, 0, 5, 100) is None
    assert two_proportion_test(0, 100, 3, 100) is not None


def count(
    variant: str,
    event: str,
    n: int,
    *,
    block: str = "hello",
    experiment: str = "subject",
    fetch_class: str = "direct",
    weight: float | None = None,
) -> ExposureCount:
    return ExposureCount(
        "demo",
        block,
        variant,
        experiment,
        fetch_class,
        "ok",
        "list",
        event,
        HOUR,
        n,
        float(n) if weight is None else weight,
    )


def worked_example() -> list[ExposureCount]:
    return [
        count("a", "open", 600),
        count("a", "open", 400, fetch_class="apple-mpp"),  # Apple prefetches count as exposures
        count("a", "click", 50),
        count("b", "open", 1000),
        count("b", "click", 80),
        count("b", "open", 300, fetch_class="scanner"),  # scanners count in no rate
        count("b", "click", 40, fetch_class="scanner"),
        count("holdout", "open", 200),
        count("holdout", "click", 4),
        count("morning", "open", 100, block="hero", experiment=""),
        count("morning", "click", 7, block="hero", experiment=""),
    ]


def test_report_rows_control_variant_holdout_and_rules() -> None:
    report = as_json(build("demo", worked_example()))
    rows = {(r["block"], r["variant"]): r for r in report["variants"]}
    assert [(r["block"], r["variant"], r["role"]) for r in report["variants"]] == [
        ("hello", "a", "control"),
        ("hello", "b", "variant"),
        ("hello", "holdout", "holdout"),
        ("hero", "morning", "rule"),
    ]
    a, b, holdout = rows["hello", "a"], rows["hello", "b"], rows["hello", "holdout"]
    assert (a["exposures"], a["clicks"], a["ctr"], a["z"], a["p_value"]) == (1000, 50, 0.05, None, None)
    assert a["ci95"] == [pytest.approx(0.038130, abs=1e-6), pytest.approx(0.065314, abs=1e-6)]
    assert (b["exposures"], b["clicks"], b["ctr"], b["z"]) == (1000, 80, 0.08, 2.7211)
    assert round(b["p_value"], 4) == 0.0065
    # The holdout: 4 of 200 = 2%, tested against the control like any variant.
    test = two_proportion_test(50, 1000, 4, 200)
    assert test is not None and holdout["z"] == round(test.z, 4) and holdout["ctr"] == 0.02
    morning = rows["hero", "morning"]
    assert (morning["experiment"], morning["ctr"], morning["z"], morning["p_value"]) == (
        None,
        0.07,
        None,
        None,
    )


def test_opens_by_fetch_class_keep_apple_prefetches_and_scanners_apart() -> None:
    opens = {b["block"]: b for b in as_json(build("demo", worked_example()))["opens"]}
    hello = opens["hello"]
    assert (hello["total"], hello["human"], hello["apple_prefetch"], hello["scanner"]) == (
        2500,
        1800,
        400,
        300,
    )
    assert hello["by_fetch_class"] == {
        "direct": 1800,
        "apple-mpp": 400,
        "scanner": 300,
    }  # FETCH_CLASSES order
    assert opens["hero"]["human"] == 100


def test_sampled_opens_are_estimates_and_the_interval_uses_what_was_recorded() -> None:
    # At rate 0.25, 250 recorded opens stand for 1000; the 50 clicks (always recorded) give 5%.
    row = build("demo", [count("a", "open", 250, weight=1000.0), count("a", "click", 50)]).variants[0]
    assert (row.exposures, row.recorded, row.ctr) == (1000.0, 250, 0.05)
    assert row.interval == wilson(0.05 * 250, 250)  # wider than wilson(50, 1000): conservative
    full = wilson(50, 1000)
    assert row.interval.high - row.interval.low > full.high - full.low


def test_the_control_is_the_variant_named_control_else_the_first_by_name() -> None:
    assert control_of(["treatment", "control", "holdout"]) == "control"
    assert control_of(["b", "a", "holdout"]) == "a"
    assert control_of(["holdout"]) is None


def test_times_are_iso_8601_and_utc_unless_an_offset_is_given() -> None:
    assert parse_time("2024-05-01") == HOUR - 10 * 3600
    assert parse_time("2024-05-01T10:00Z") == HOUR
    assert parse_time("2024-05-01T12:00:00+02:00") == HOUR
    with pytest.raises(ValueError, match="ISO 8601"):
        parse_time("yesterday")


def test_the_web_view_has_no_block_name_and_is_labelled_in_the_text() -> None:
    text = as_text(build("demo", [count("a", "open", 10, block="", experiment="")]))
    assert "(web view)" in text and "\n  " not in text
