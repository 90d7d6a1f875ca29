"""``opentime check-config``: every setting with its value and source, then the key ring and campaigns."""

from __future__ import annotations

from pathlib import Path

import click

from app.campaigns.loader import Campaign
from app.cli.common import config_option, fail, read_loaded, read_ring
from app.config import FIELDS, check_serving, masked
from app.errors import CampaignError, ConfigError
from app.services import load_campaigns_for

# Every block kind a campaign can declare (``kind = ...`` in blocks.toml) and the Campaign field
# that holds its blocks; tests check that no Mapping field of Campaign is missing here.
BLOCK_KINDS = (("list", "lists"), ("image", "images"), ("countdown", "countdowns"), ("form", "forms"))


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
    try:
        check_serving(loaded.settings)
    except ConfigError as exc:
        fail(str(exc))
    ring = read_ring(loaded.settings.keys_file)
    click.echo(f"key ring: {len(ring)} key(s), signing with {ring.signing_key.kid}")
    try:
        campaigns = load_campaigns_for(loaded.settings)
    except CampaignError as exc:
        fail(str(exc))
    click.echo(f"campaigns: {len(campaigns) or 'none'}")
    for campaign in campaigns.values():
        click.echo(f"  {describe(campaign)}")


def describe(campaign: Campaign) -> str:
    """``demo: 4 blocks (2 lists, 1 image, 1 countdown), 1 fragment, email + web view``."""
    counts = [(kind, len(getattr(campaign, field))) for kind, field in BLOCK_KINDS]
    total = sum(count for _, count in counts)
    kinds = ", ".join(plural(count, kind) for kind, count in counts if count)
    parts = [plural(total, "block") + (f" ({kinds})" if kinds else "")]
    if campaign.fragments:
        parts.append(plural(len(campaign.fragments), "fragment"))
    parts.append("email + web view" if campaign.has_email else "no email templates")
    return f"{campaign.name}: {', '.join(parts)}"


def plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"
