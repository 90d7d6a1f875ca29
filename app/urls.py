"""The open-time URLs minted for a campaign (pure: base URL + token + blocks in, URLs out)."""

from __future__ import annotations

from app.campaigns import Campaign


def list_url(base_url: str, token: str, block: str) -> str:
    return f"{base_url}/v1/{token}/list/{block}.json"


def campaign_urls(base_url: str, token: str, campaign: Campaign) -> dict[str, str]:
    """Every URL of the campaign for one token, keyed ``list:<block>``."""
    return {f"list:{name}": list_url(base_url, token, name) for name in campaign.lists}
