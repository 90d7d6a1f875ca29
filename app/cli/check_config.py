"""``opentime check-config``: every setting with its value and source, then the key ring and campaigns."""

from __future__ import annotations

from pathlib import Path

import click

from app.cli.common import config_option, fail, read_loaded, read_ring
from app.config import FIELDS, masked
from app.errors import CampaignError
from app.services import load_campaigns_for


@click.command("check-config")
@config_option
def check_config(config: Path | None) -> None:
    """Print every setting with its value, source, default and help (secrets masked)."""
    loaded = read_loaded(config)
    for row in FIELDS:
        value = masked(row, getattr(loaded.settings, row.name))
        default = "required" if row.required else masked(row, row.default) or "empty"
        source = f"{loaded.sources[row.name]} (default: {default})"
        click.echo(f"{row.name} = {value}\n    source: {source}\n    {row.help}")
    ring = read_ring(loaded.settings.keys_file)
    click.echo(f"key ring: {len(ring)} key(s), signing with {ring.signing_key.kid}")
    try:
        campaigns = load_campaigns_for(loaded.settings)
    except CampaignError as exc:
        fail(str(exc))
    names = ", ".join(f"{c.name} ({len(c.lists)} blocks)" for c in campaigns.values())
    click.echo(f"campaigns: {names or 'none'}")
