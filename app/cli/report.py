"""``opentime report --campaign C``: a campaign's opens and click-through per variant, from the store.

Prints the tables (``app.reports.table``), or with ``--json`` the same document as
``GET /api/campaigns/{c}/report``; ``--png FILE`` also writes the chart (``app.images.report_chart``).
``--since`` / ``--until`` take ISO 8601 dates or times (UTC unless an offset is given) and select the
hours that start in [since, until).
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import click
import orjson

from app.cli.common import config_option, database_option, fail, read_setting, static_option, store_url
from app.images.report_chart import render
from app.reports.report import Report, as_json, campaign_report, parse_time
from app.reports.table import as_text
from app.store import open_store
from app.store.base import StoreError


@click.command("report")
@config_option
@database_option
@static_option
@click.option("--campaign", required=True, help="The campaign to report on.")
@click.option("--since", default=None, help="From this date or time (ISO 8601; UTC unless given).")
@click.option("--until", default=None, help="Up to this date or time (ISO 8601; UTC unless given).")
@click.option("--json", "as_json_", is_flag=True, help="Print the report as JSON (as the API answers).")
@click.option(
    "--png",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="Write the chart to this file.",
)
def report(
    config: Path | None,
    database_url: str | None,
    static: Path | None,
    campaign: str,
    since: str | None,
    until: str | None,
    as_json_: bool,
    png: Path | None,
) -> None:
    """Opens by fetch class and click-through per variant, with 95% intervals and significance."""
    try:
        start = None if since is None else parse_time(since)
        end = None if until is None else parse_time(until)
    except ValueError as exc:
        fail(str(exc))
    fonts = Path(read_setting("static_dir", config, static)) / "fonts"
    url = store_url(config, database_url)
    try:
        built = asyncio.run(_report(url, campaign, start, end))
    except (StoreError, ValueError) as exc:
        fail(str(exc))
    if png is not None:
        try:
            png.write_bytes(render(built, fonts))
        except OSError as exc:
            fail(f"cannot write the chart: {exc}")
        click.echo(f"chart written to {png}", err=True)
    if as_json_:
        click.echo(orjson.dumps(as_json(built), option=orjson.OPT_INDENT_2).decode())
    else:
        click.echo(as_text(built), nl=False)


async def _report(url: str, campaign: str, since: float | None, until: float | None) -> Report:
    store = open_store(url, create=False)  # a typo in the URL reports on nothing, never a new store
    await store.open()
    try:
        return await campaign_report(store.exposures, campaign, since, until)
    finally:
        await store.close()
