"""Open-time decisions, pure: rules (DST edges included), the open context, experiments' guarantees,
and the load-time checks that name file, block and rule."""

from __future__ import annotations

import shutil
from collections import Counter
from datetime import UTC, datetime, time
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from app.campaigns.loader import load_campaign
from app.config import PROJECT_ROOT
from app.decisions.context import OpenContext, country_of, device_of
from app.decisions.experiments import BUCKETS, HOLDOUT, experiment
from app.decisions.rules import parse_rule
from app.errors import CampaignError

NEW_YORK = ZoneInfo("America/New_York")
BERLIN = ZoneInfo("Europe/Berlin")
IPHONE = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 Mobile/15E148"
WINDOWS = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 Chrome/120 Safari/537.36"


def at(text: str) -> float:
    """A UTC moment as Unix time."""
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


def context(moment: float, zone: Any = UTC, **changes: Any) -> OpenContext:
    return OpenContext(moment, zone, changes.pop("fetch_class", "direct"), **changes)


def matches(spec: dict[str, Any], ctx: OpenContext) -> bool:
    return parse_rule(0, {**spec, "variant": "v"}, "test").matches(ctx)


def test_a_toml_time_of_day_with_seconds_is_exact_to_the_microsecond() -> None:
    """TOML local times may carry seconds and fractions (``after = 18:00:30.5``): the rule holds
    from that instant, not from its minute, and an overnight window wraps at midnight."""
    rule = {"after": time(18, 0, 30, 500_000), "before": time(6, 0)}
    assert not matches(rule, context(at("2026-06-01T18:00:30.499999")))
    assert matches(rule, context(at("2026-06-01T18:00:30.500000")))
    assert matches(rule, context(at("2026-06-01T23:59:59.999999")))
    assert matches(rule, context(at("2026-06-02T05:59:59.999999")))
    assert not matches(rule, context(at("2026-06-02T06:00:00")))


def test_time_of_day_follows_the_wall_clock_on_both_sides_of_new_york_dst() -> None:
    rule = {"after": "18:00"}
    # 2026-03-08: clocks jump 02:00 EST -> 03:00 EDT. 18:00 local is 23:00 UTC before, 22:00 UTC after.
    assert not matches(rule, context(at("2026-03-07T22:59"), NEW_YORK))  # 17:59 EST
    assert matches(rule, context(at("2026-03-07T23:00"), NEW_YORK))  # 18:00 EST
    assert not matches(rule, context(at("2026-03-08T21:59"), NEW_YORK))  # 17:59 EDT
    assert matches(rule, context(at("2026-03-08T22:00"), NEW_YORK))  # 18:00 EDT
    # 2026-11-01: back to EST.
    assert not matches(rule, context(at("2026-11-01T22:59"), NEW_YORK))  # 17:59 EST
    assert matches(rule, context(at("2026-11-01T23:00"), NEW_YORK))


def test_a_local_date_time_in_the_skipped_and_the_repeated_hour() -> None:
    # New York 2026-03-08 02:30 does not exist: it counts as 02:30 EST = 07:30 UTC (03:30 EDT).
    skipped = {"after": "2026-03-08T02:30"}
    assert not matches(skipped, context(at("2026-03-08T07:29"), NEW_YORK))
    assert matches(skipped, context(at("2026-03-08T07:30"), NEW_YORK))
    # Berlin 2026-10-25 02:30 happens twice (CEST, then CET): the first, 00:30 UTC.
    repeated = {"before": "2026-10-25T02:30"}
    assert matches(repeated, context(at("2026-10-25T00:29"), BERLIN))
    assert not matches(repeated, context(at("2026-10-25T00:30"), BERLIN))
    assert not matches(repeated, context(at("2026-10-25T01:15"), BERLIN))  # 02:15 the second time
    # Berlin spring forward, 2026-03-29 02:00 CET -> 03:00 CEST: "after 02:30" holds from 03:00 CEST on.
    daily = {"after": "02:30", "before": "04:00"}
    assert not matches(daily, context(at("2026-03-29T00:59"), BERLIN))  # 01:59 CET
    assert matches(daily, context(at("2026-03-29T01:00"), BERLIN))  # 03:00 CEST
    assert not matches(daily, context(at("2026-03-29T02:00"), BERLIN))  # 04:00 CEST


def test_an_offset_date_time_is_one_moment_for_every_zone() -> None:
    rule = {"after": "2026-12-24T18:00+01:00"}
    assert matches(rule, context(at("2026-12-24T17:00"), NEW_YORK))
    assert not matches(rule, context(at("2026-12-24T16:59"), BERLIN))


def test_overnight_windows_and_weekdays_are_the_readers_own() -> None:
    night = {"after": "22:00", "before": "06:00"}
    assert matches(night, context(at("2026-06-01T21:30"), BERLIN))  # 23:30 CEST
    assert matches(night, context(at("2026-06-02T03:59"), BERLIN))  # 05:59
    assert not matches(night, context(at("2026-06-02T04:00"), BERLIN))  # 06:00
    weekend = {"weekdays": ["sat", "sun"]}
    # Friday 23:30 in New York is Saturday 04:30 UTC: still Friday for the reader.
    assert not matches(weekend, context(at("2026-06-06T03:30"), NEW_YORK))
    assert matches(weekend, context(at("2026-06-06T03:30"), UTC))


def test_fetch_class_device_country_and_profile_fields() -> None:
    moment = at("2026-06-01T12:00")
    assert matches({"fetch_class": ["direct"]}, context(moment))
    assert not matches({"fetch_class": "gmail-proxy"}, context(moment))
    assert matches({"device": "mobile"}, context(moment, device="mobile"))
    assert matches({"country": ["DE", "AT"]}, context(moment, country="AT"))
    assert not matches({"country": "DE"}, context(moment))
    gold = context(moment, profile={"loyalty": {"tier": "gold"}})
    assert matches({"field": "loyalty.tier", "equals": "gold"}, gold)
    assert matches({"field": "loyalty.tier", "in": ["gold", "platinum"]}, gold)
    assert matches({"field": "loyalty.points", "exists": False}, gold)
    assert not matches({"field": "loyalty.tier", "exists": True}, context(moment, profile={}))


def test_proxies_reveal_neither_device_nor_country() -> None:
    assert device_of(IPHONE, "direct") == "mobile"
    assert device_of(WINDOWS, "direct") == "desktop"
    assert device_of("Outlook-iOS/2.0", "direct") == "unknown"
    for proxy in ("gmail-proxy", "apple-mpp", "yahoo-proxy", "other-proxy", "scanner"):
        assert device_of(IPHONE, proxy) == "unknown"
        assert country_of("DE", proxy) is None
    assert country_of(" de ", "direct") == "DE"
    assert country_of("XX", "direct") is None and country_of("T1", "direct") is None
    assert country_of("DEU", "direct") is None


def test_an_experiment_is_deterministic_and_weighted() -> None:
    ab = experiment("headline", {"a": 1, "b": 1, "c": 2}, 10, "demo/headline")
    again = experiment("headline", {"a": 1, "b": 1, "c": 2}, 10, "demo/headline")
    recipients = [f"cust-{i:07d}" for i in range(20_000)]
    first = [ab.assign(r) for r in recipients]
    assert first == [again.assign(r) for r in recipients]  # another process, the same table
    shares = Counter(first)
    assert abs(shares[HOLDOUT] / len(recipients) - 0.10) < 0.01
    assert abs(shares["c"] / (len(recipients) - shares[HOLDOUT]) - 0.5) < 0.02
    assert abs(shares["a"] / (len(recipients) - shares[HOLDOUT]) - 0.25) < 0.02


def test_weight_changes_move_recipients_only_into_or_out_of_the_changed_variant() -> None:
    recipients = [f"cust-{i:07d}" for i in range(20_000)]

    def assigned(weights: dict[str, float], holdout: float = 0) -> list[str]:
        built = experiment("t", weights, holdout, "c/t")
        return [built.assign(r) for r in recipients]

    base = assigned({"a": 1, "b": 1, "c": 1})
    raised = assigned({"a": 2, "b": 1, "c": 1})
    moved = [(old, new) for old, new in zip(base, raised, strict=True) if old != new]
    assert moved and all(new == "a" for _, new in moved)  # only into the raised one
    lowered = assigned({"a": 1, "b": 0.5, "c": 1})
    moved = [(old, new) for old, new in zip(base, lowered, strict=True) if old != new]
    assert moved and all(old == "b" for old, _ in moved)  # only out of the lowered one
    added = assigned({"a": 1, "b": 1, "c": 1, "d": 1})
    assert all(new == "d" for old, new in zip(base, added, strict=True) if old != new)
    held = assigned({"a": 1, "b": 1, "c": 1}, holdout=20)
    assert all(new == HOLDOUT for old, new in zip(base, held, strict=True) if old != new)
    # The bucket table itself: the same guarantee for every one of the 10,000 buckets.
    before = experiment("t", {"a": 1, "b": 1}, 0, "c/t").table
    after = experiment("t", {"a": 1, "b": 3}, 0, "c/t").table
    assert len(before) == BUCKETS
    assert all(new == "b" for old, new in zip(before, after, strict=True) if old != new)


BLOCK = """
[campaign]
click_default = "https://shop.example.com/"
[experiments.headline]
variants = { urgent = 1, calm = 1 }
[blocks.deals]
kind = "list"
source = "recommendations"
fallback = "weekly-picks/recommendations.json"
[blocks.deals.fields]
name = { type = "text" }
[blocks.deals.variants.short]
max_items = 1
"""


def campaign_with(tmp_path: Path, extra: str) -> Path:
    folder = tmp_path / "rules"
    folder.mkdir(exist_ok=True)
    (folder / "blocks.toml").write_text(BLOCK + extra)
    return folder


def load(folder: Path) -> Any:
    return load_campaign(
        folder, PROJECT_ROOT / "static", default_budget_ms=150, public_base_url="https://a.example.com"
    )


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ('[[blocks.deals.rules]]\nafter = "25:00"\nvariant = "short"\n', "[blocks.deals].rules[0] after"),
        ('[[blocks.deals.rules]]\nafter = "18:00"\nvariant = "long"\n', "variant 'long' is not one of"),
        ('[[blocks.deals.rules]]\nexperiment = "nope"\n', "experiment 'nope' is not in [experiments]"),
        ('[[blocks.deals.rules]]\nexperiment = "headline"\n', "assigns urgent, calm"),
        ('[[blocks.deals.rules]]\ncountry = "Germany"\nvariant = "short"\n', "not ISO 3166"),
        ('[[blocks.deals.rules]]\ndevice = "tablet"\nvariant = "short"\n', "unknown tablet"),
        (
            '[[blocks.deals.rules]]\nweekdays = ["funday"]\nvariant = "short"\n',
            "[blocks.deals].rules[0] weekdays",
        ),
        ('[[blocks.deals.rules]]\nvariant = "short"\nexperiment = "headline"\n', "either variant"),
        ('[[blocks.deals.rules]]\nequals = 1\nvariant = "short"\n', "equals needs field"),
        ('[[blocks.deals.rules]]\nafter = "18:00"\nbefore = "2026-01-01T00:00"\nvariant = "short"\n', "both"),
        ('[[blocks.deals.rules]]\nwhen = "now"\nvariant = "short"\n', "unknown key(s) when"),
        ("[blocks.deals.variants.holdout]\nmax_items = 2\n", "variants.holdout"),
        ("[blocks.deals.variants.wide]\nmax_items = 500\n", "[blocks.deals].variants.wide max_items"),
        ('[blocks.deals.variants.k]\nkind = "image"\n', "cannot change kind"),
    ],
)
def test_mistakes_are_named_with_file_block_and_rule(tmp_path: Path, extra: str, message: str) -> None:
    with pytest.raises(CampaignError) as raised:
        load(campaign_with(tmp_path, extra))
    assert message in str(raised.value) and "blocks.toml" in str(raised.value)
    assert "[blocks.deals" in str(raised.value)


def test_click_tracking_needs_a_default_and_allowed_hosts(tmp_path: Path) -> None:
    folder = tmp_path / "clicks"
    folder.mkdir()
    text = BLOCK.replace('[campaign]\nclick_default = "https://shop.example.com/"\n', "")
    (folder / "blocks.toml").write_text(
        text.replace('name = { type = "text" }', 'u = { type = "url" }').replace(
            'source = "recommendations"', 'source = "recommendations"\nclick = "u"'
        )
    )
    with pytest.raises(CampaignError, match="click_hosts"):
        load(folder)
    (folder / "blocks.toml").write_text(
        (folder / "blocks.toml")
        .read_text()
        .replace('click = "u"', 'click = "u"\nclick_hosts = ["shop.example.com"]')
    )
    with pytest.raises(CampaignError, match="click_default"):
        load(folder)


def test_the_worked_example_loads_with_its_rule_and_experiment(tmp_path: Path) -> None:
    folder = tmp_path / "flash-sale"
    shutil.copytree(PROJECT_ROOT / "amp_templates" / "flash-sale", folder)
    campaign = load(folder)
    deals, banner = campaign.lists["deals"], campaign.images["banner"]
    assert deals.decider.needs_profile  # its zone comes from the profile (zone_field)
    assert deals.decider.variants["last-call"].max_items == 2 and deals.click_field == "url"
    assert set(banner.decider.variants) == {"urgent", "calm"} and not banner.decider.needs_profile
    evening = OpenContext(at("2026-06-01T23:00"), NEW_YORK, "direct", recipient="cust-0000001")
    noon = OpenContext(at("2026-06-01T16:00"), NEW_YORK, "direct", recipient="cust-0000001")
    assert deals.decider.decide(deals, evening).variant == "last-call"
    assert deals.decider.decide(deals, noon).variant == "default"
    assert banner.decider.decide(banner, noon).experiment == "headline"
