"""``opentime import``: bulk-load profiles into the configured store, with a progress bar and a report."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import click

from app.cli.common import config_option, database_option, fail, store_url
from app.ingest.importer import ImportReport, import_file, progress_total
from app.store import open_store
from app.store.base import StoreError

MAX_REPORTED_ROWS = 50


@click.command("import")
@config_option
@database_option
@click.argument("file", type=click.Path(path_type=Path, dir_okay=False, exists=True))
@click.option(
    "--format", "fmt", type=click.Choice(["jsonl", "csv"]), default=None, help="Else from the extension."
)
@click.option("--skip-invalid", is_flag=True, help="Load the valid rows even if some are invalid.")
@click.option("--batch-size", type=click.IntRange(1, 100_000), default=5000, show_default=True)
def import_(
    config: Path | None,
    database_url: str | None,
    file: Path,
    fmt: str | None,
    skip_invalid: bool,
    batch_size: int,
) -> None:
    """Bulk-load profiles from JSONL or CSV (validated first; loaded in atomic batches; idempotent)."""
    url = store_url(config, database_url)
    sys.exit(run_import(file, url, fmt=fmt, skip_invalid=skip_invalid, batch_size=batch_size))


def run_import(path: Path, database_url: str, *, fmt: str | None, skip_invalid: bool, batch_size: int) -> int:
    """Import ``path`` and return the process exit code."""
    try:
        size = progress_total(path)
        report = asyncio.run(_import(path, size, database_url, fmt, skip_invalid, batch_size))
    except (StoreError, ValueError, OSError) as exc:
        fail(str(exc))
    print_report(report)
    return 1 if report.invalid else 0


async def _import(
    path: Path, size: int, database_url: str, fmt: str | None, skip_invalid: bool, batch_size: int
) -> ImportReport:
    store = open_store(database_url)
    await store.open()
    try:
        with click.progressbar(length=size, label="importing", file=sys.stderr) as bar:
            return await import_file(
                store.profiles,
                path,
                fmt=fmt,
                skip_invalid=skip_invalid,
                batch_size=batch_size,
                progress=bar.update,
            )
    finally:
        await store.close()


def print_report(report: ImportReport) -> None:
    for bad in report.invalid[:MAX_REPORTED_ROWS]:
        who = f" ({bad.recipient_id})" if bad.recipient_id else ""
        click.echo(f"line {bad.line}{who}: {bad.reason}", err=True)
    if report.invalid_count > MAX_REPORTED_ROWS:
        click.echo(f"... and {report.invalid_count - MAX_REPORTED_ROWS} more invalid rows", err=True)
    if report.invalid and not report.loaded:
        click.echo(
            f"nothing loaded: {report.invalid_count} invalid row(s) (use --skip-invalid to load the rest)"
        )
        return
    click.echo(
        f"rows: {report.rows_seen}, valid: {report.rows_valid}, "
        f"loaded (new or changed): {report.rows_loaded}, unchanged: {report.unchanged}, "
        f"invalid: {report.invalid_count}, duplicates: {report.duplicates}"
    )
