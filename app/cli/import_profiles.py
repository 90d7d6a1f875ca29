"""``opentime import``: bulk-load profiles into the configured store, with a progress bar and a report.

With ``redis_url`` set, every committed batch's recipients are announced through Redis (tombstoned and
published), so the servers drop what they cached of them, as they do after a webhook event.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import click

from app.cli.common import config_option, database_option, fail, read_setting, store_url
from app.content.invalidation import Invalidation
from app.ingest.importer import ImportReport, import_file, progress_total
from app.shared.config import RedisConfig
from app.store import open_store
from app.store.base import ProfileRepository, StoreError

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
    redis = shared_config(config)
    sys.exit(run_import(file, url, fmt=fmt, skip_invalid=skip_invalid, batch_size=batch_size, redis=redis))


def shared_config(config: Path | None) -> RedisConfig | None:
    """The Redis the servers share, if any: the import announces its changes there."""
    url = read_setting("redis_url", config, needed=False)
    if not url:
        return None
    return RedisConfig(
        url,
        read_setting("redis_key_prefix", config),
        read_setting("redis_timeout_ms", config) / 1000,
        read_setting("redis_profile_ttl_seconds", config),
        # The servers' store deadline: their reads must not outlive this import's tombstones.
        read_setting("database_timeout_ms", config) / 1000,
    )


def run_import(
    path: Path,
    database_url: str,
    *,
    fmt: str | None,
    skip_invalid: bool,
    batch_size: int,
    redis: RedisConfig | None = None,
) -> int:
    """Import ``path`` and return the process exit code."""
    try:
        size = progress_total(path)
        report = asyncio.run(_import(path, size, database_url, fmt, skip_invalid, batch_size, redis))
    except (StoreError, ValueError, OSError) as exc:
        fail(str(exc))
    print_report(report)
    return 1 if report.invalid else 0


async def _import(
    path: Path,
    size: int,
    database_url: str,
    fmt: str | None,
    skip_invalid: bool,
    batch_size: int,
    redis: RedisConfig | None,
) -> ImportReport:
    store = open_store(database_url)
    await store.open()
    try:
        if redis is None:
            return await _load(store.profiles, path, size, fmt, skip_invalid, batch_size, None)
        from app.shared.tier import announcer  # only with Redis: see app.shared.config

        async with announcer(redis) as invalidation:
            report = await _load(store.profiles, path, size, fmt, skip_invalid, batch_size, invalidation)
        if invalidation.backlog:
            click.echo(
                f"warning: Redis did not answer: {invalidation.backlog} changed recipient(s) not announced;"
                " servers show their new data once their caches expire (cache_ttl_seconds)",
                err=True,
            )
        return report
    finally:
        await store.close()


async def _load(
    profiles: ProfileRepository,
    path: Path,
    size: int,
    fmt: str | None,
    skip_invalid: bool,
    batch_size: int,
    invalidation: Invalidation | None,
) -> ImportReport:
    with click.progressbar(length=size, label="importing", file=sys.stderr) as bar:
        return await import_file(
            profiles,
            path,
            fmt=fmt,
            skip_invalid=skip_invalid,
            batch_size=batch_size,
            progress=bar.update,
            invalidation=invalidation,
        )


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
