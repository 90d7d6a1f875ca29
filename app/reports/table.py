"""The report as text tables, for ``opentime report`` (pure)."""

from __future__ import annotations

from collections.abc import Sequence

from app.open_time.fetch_class import FETCH_CLASSES
from app.privacy.export import iso
from app.reports.report import APPLE_PREFETCH, SCANNER, Report, VariantRow, block_label


def as_text(report: Report) -> str:
    since = "the first recorded hour" if report.since is None else iso(report.since)
    until = "now" if report.until is None else iso(report.until)
    lines = [f"campaign {report.campaign}: exposures from {since} to {until}", ""]
    if not report.opens and not report.variants:
        return "\n".join([*lines, "no exposures recorded"]) + "\n"
    lines += [
        "opens by fetch class (per block: an open of an email with three blocks counts three times;"
        " human: direct and through mail providers' proxies)"
    ]
    machine = {APPLE_PREFETCH, SCANNER}
    seen = {name for b in report.opens for name in b.by_fetch_class} - machine
    classes = [name for name in FETCH_CLASSES if name in seen] + sorted(seen - set(FETCH_CLASSES))
    header = ["block", "total", "apple prefetch", "scanner", "human", *classes]
    body = [
        [block_label(b.block), *map(_count, (b.total, b.apple_prefetch, b.scanner, b.human))]
        + [_count(b.by_fetch_class.get(name, 0.0)) for name in classes]
        for b in report.opens
    ]
    lines += [*columns([header, *body]), ""]
    lines += [
        "click-through by variant (95% Wilson interval; z, p: two-sided two-proportion z-test"
        " against the experiment's control; scanners left out)"
    ]
    header = [
        "block",
        "experiment",
        "variant",
        "role",
        "exposures",
        "clicks",
        "ctr",
        "95% interval",
        "z",
        "p",
    ]
    lines += columns([header, *map(_variant, report.variants)])
    return "\n".join(lines) + "\n"


def _variant(row: VariantRow) -> list[str]:
    test = row.test
    return [
        block_label(row.block),
        row.experiment or "-",
        row.variant,
        row.role,
        _count(row.exposures),
        _count(row.clicks),
        _percent(row.ctr),
        f"{_percent(row.interval.low)} - {_percent(row.interval.high)}",
        "" if test is None else f"{test.z:.2f}",
        "" if test is None else _p(test.p_value),
    ]


def _p(value: float) -> str:
    return "<0.0001" if value < 0.0001 else f"{value:.4f}"


def _count(value: float) -> str:
    return str(round(value))


def _percent(rate: float) -> str:
    return f"{rate * 100:.2f}%"


def columns(rows: Sequence[Sequence[str]]) -> list[str]:
    """Rows as aligned columns: text left, numbers right."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    numeric = [all(_numeric(row[i]) for row in rows[1:]) for i in range(len(widths))]
    return [
        "  ".join(
            cell.rjust(w) if right else cell.ljust(w)
            for cell, w, right in zip(row, widths, numeric, strict=True)
        ).rstrip()
        for row in rows
    ]


def _numeric(cell: str) -> bool:
    return cell == "" or cell.rstrip("%").lstrip("<-").replace(".", "", 1).isdigit()
