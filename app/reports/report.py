"""A campaign's report, built from its exposure counters (pure): opens by fetch class, and exposures
and click-through per variant with 95% intervals and the significance of each difference.

**Opens by fetch class**, per block (an email with three blocks counts each open three times):
Apple Mail Privacy Protection fetches everything at delivery, whether or not the reader opens, and
security scanners fetch every image and link, so both are shown apart from human opens (direct, and
through Gmail's, Yahoo's and other image proxies).

**Variants.** Exposures are the opens of a block that showed the variant (every open, not distinct
recipients); clicks, the clicks that went through it. Scanners' opens and clicks are left out of
both. Apple's prefetches are kept: an experiment assigns variants at random, so they dilute every
arm alike, while leaving them out would drop the opens but keep the clicks of Apple Mail readers.
Rows are grouped by block and experiment. In an experiment the control is the variant named
``control``, else the first by name (the holdout aside); every other variant, the holdout included,
is tested against it (``app.reports.stats``). Variants chosen by rules are not randomized, so they
get intervals but no test.

With ``exposure_sample_rate`` below 1, exposures are estimates (recorded opens / rate); the interval
and the test then use the opens really recorded as the number of trials, which is conservative.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from app.open_time.fetch_class import FETCH_CLASSES
from app.privacy.export import iso
from app.reports.stats import Interval, Test, two_proportion_test, wilson
from app.store.base import ExposureCount, ExposureRepository

APPLE_PREFETCH = "apple-mpp"
SCANNER = "scanner"
CONTROL = "control"
HOLDOUT = "holdout"
Role = Literal["control", "variant", "holdout", "rule"]


@dataclass(frozen=True, slots=True)
class BlockOpens:
    block: str
    by_fetch_class: dict[str, float]

    @property
    def apple_prefetch(self) -> float:
        return self.by_fetch_class.get(APPLE_PREFETCH, 0.0)

    @property
    def scanner(self) -> float:
        return self.by_fetch_class.get(SCANNER, 0.0)

    @property
    def total(self) -> float:
        return sum(self.by_fetch_class.values())

    @property
    def human(self) -> float:
        return self.total - self.apple_prefetch - self.scanner


@dataclass(frozen=True, slots=True)
class VariantRow:
    block: str
    experiment: str  # "" for variants chosen by rules (or the default)
    variant: str
    role: Role
    exposures: float  # estimated (recorded opens weighted by 1 / sample rate)
    recorded: int  # opens really recorded: the trials of the interval and the test
    clicks: float
    interval: Interval
    test: Test | None = None  # against the control (experiments only)

    @property
    def ctr(self) -> float:
        return 0.0 if self.exposures <= 0 else min(self.clicks / self.exposures, 1.0)


@dataclass(frozen=True, slots=True)
class Report:
    campaign: str
    since: float | None
    until: float | None
    opens: list[BlockOpens] = field(default_factory=list)
    variants: list[VariantRow] = field(default_factory=list)


@dataclass(slots=True)
class _Arm:
    exposures: float = 0.0
    recorded: int = 0
    clicks: float = 0.0


async def campaign_report(
    exposures: ExposureRepository, campaign: str, since: float | None = None, until: float | None = None
) -> Report:
    """The report of ``campaign`` from the counters stored for the hours in [since, until)."""
    return build(campaign, await exposures.read(campaign, since, until), since, until)


def build(
    campaign: str, counters: Iterable[ExposureCount], since: float | None = None, until: float | None = None
) -> Report:
    opens: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    arms: dict[tuple[str, str], dict[str, _Arm]] = defaultdict(lambda: defaultdict(_Arm))
    for c in counters:
        if c.event == "open":
            opens[c.block][c.fetch_class] += c.weight
        if c.fetch_class == SCANNER:
            continue
        arm = arms[(c.block, c.experiment)][c.variant]
        if c.event == "open":
            arm.exposures += c.weight
            arm.recorded += c.recorded
        elif c.event == "click":
            arm.clicks += c.weight
    return Report(
        campaign,
        since,
        until,
        [BlockOpens(block, _ordered(by_class)) for block, by_class in sorted(opens.items())],
        [
            row
            for (block, experiment), group in sorted(arms.items())
            for row in _rows(block, experiment, group)
        ],
    )


def _ordered(by_class: dict[str, float]) -> dict[str, float]:
    known = [name for name in FETCH_CLASSES if name in by_class]
    return {name: by_class[name] for name in known + sorted(set(by_class) - set(known))}


def _rows(block: str, experiment: str, group: dict[str, _Arm]) -> list[VariantRow]:
    control = control_of(group) if experiment else None
    names = sorted(group, key=lambda name: (name != control, name == HOLDOUT, name))
    base = None if control is None else group[control]
    return [_row(block, experiment, name, group[name], control, base) for name in names]


def control_of(variants: Iterable[str]) -> str | None:
    """``control`` if there is one, else the first variant by name that is not the holdout."""
    names = sorted(set(variants) - {HOLDOUT})
    if CONTROL in names:
        return CONTROL
    return names[0] if names else None


def _row(
    block: str, experiment: str, name: str, arm: _Arm, control: str | None, base: _Arm | None
) -> VariantRow:
    successes = _successes(arm)
    role: Role = (
        "rule"
        if not experiment
        else "control"
        if name == control
        else "holdout"
        if name == HOLDOUT
        else "variant"
    )
    test = None
    if base is not None and name != control:
        test = two_proportion_test(_successes(base), base.recorded, successes, arm.recorded)
    interval = wilson(successes, arm.recorded)
    return VariantRow(block, experiment, name, role, arm.exposures, arm.recorded, arm.clicks, interval, test)


def _successes(arm: _Arm) -> float:
    """Clicks scaled to the opens recorded (the same as the clicks when every open is recorded)."""
    if arm.exposures <= 0:
        return 0.0
    return min(arm.clicks / arm.exposures, 1.0) * arm.recorded


def as_json(report: Report) -> dict[str, Any]:
    """What ``GET /api/campaigns/{c}/report`` and ``opentime report --json`` answer."""
    return {
        "campaign": report.campaign,
        "since": None if report.since is None else iso(report.since),
        "until": None if report.until is None else iso(report.until),
        "opens": [
            {
                "block": b.block,
                "total": round(b.total),
                "human": round(b.human),
                "apple_prefetch": round(b.apple_prefetch),
                "scanner": round(b.scanner),
                "by_fetch_class": {name: round(n) for name, n in b.by_fetch_class.items()},
            }
            for b in report.opens
        ],
        "variants": [
            {
                "block": r.block,
                "experiment": r.experiment or None,
                "variant": r.variant,
                "role": r.role,
                "exposures": round(r.exposures),
                "recorded": r.recorded,
                "clicks": round(r.clicks),
                "ctr": round(r.ctr, 6),
                "ci95": [round(r.interval.low, 6), round(r.interval.high, 6)],
                "z": None if r.test is None else round(r.test.z, 4),
                "p_value": None if r.test is None else round(r.test.p_value, 6),
            }
            for r in report.variants
        ],
    }


def block_label(block: str) -> str:
    """How the text and the chart name a block: the web view's exposures have no block name."""
    return block or "(web view)"


def parse_time(text: str) -> float:
    """An ISO 8601 date or date and time (``2026-05-01``, ``2026-05-01T10:00``, ``...Z``, ``...+02:00``)
    as Unix time; without an offset, UTC. ValueError names what it expects."""
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(
            f"{text!r} is not an ISO 8601 date or time (e.g. 2026-05-01 or 2026-05-01T10:00Z)"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()
