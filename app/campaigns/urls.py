"""The open-time URLs minted for a campaign (pure: base URL + token + blocks in, URLs out)."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from app.campaigns.loader import Campaign

# Stands in for the public https host where a server runs on http://localhost (a reserved domain).
PLACEHOLDER_BASE_URL = "https://amp.example.com"


def sending_base_url(public_base_url: str) -> str:
    """The base URL of the email as sent: ``public_base_url`` when it is https, else the placeholder.

    An http base is accepted for localhost only (development, ``serve --demo``), and AMP email clients
    and the AMP validator refuse http URLs (``amp-list`` and ``amp-img`` ``src`` must be https), so
    what would be sent is validated with the placeholder https origin in its place (same path).
    """
    parts = urlsplit(public_base_url)
    if parts.scheme == "https":
        return public_base_url
    return PLACEHOLDER_BASE_URL + parts.path.rstrip("/")


def list_url(base_url: str, token: str, block: str) -> str:
    return f"{base_url}/v1/{token}/list/{block}.json"


def html_url(base_url: str, token: str, block: str) -> str:
    return f"{base_url}/v1/{token}/html/{block}"


def form_url(base_url: str, token: str, block: str) -> str:
    """The amp-form ``action-xhr``: ``POST`` only."""
    return f"{base_url}/v1/{token}/form/{block}"


def img_url(base_url: str, token: str, block: str, *, ext: str = "png", retina: bool = False) -> str:
    """An image block; ``@2x`` renders at double size (give the <img> the 1x width and height)."""
    return f"{base_url}/v1/{token}/img/{block}{'@2x' if retina else ''}.{ext}"


def view_url(base_url: str, token: str) -> str:
    return f"{base_url}/v1/{token}/view"


def countdown_urls(
    base_url: str, token: str, campaign: Campaign, shared_token: str | None = None, *, retina: bool = False
) -> dict[str, str]:
    """Animated countdown GIFs: a campaign-wide timer gets the shared token when one is given (one CDN
    copy for every recipient), a per-recipient timer always the recipient's token."""
    return {
        name: img_url(
            base_url, shared_token if block.shared and shared_token else token, name, ext="gif", retina=retina
        )
        for name, block in campaign.countdowns.items()
    }


def campaign_urls(
    base_url: str, token: str, campaign: Campaign, shared_token: str | None = None
) -> dict[str, str]:
    """Every URL of the campaign for one token, keyed ``<kind>:<block>`` (for CSV exports)."""
    urls = {f"list:{name}": list_url(base_url, token, name) for name in campaign.lists}
    urls.update({f"html:{name}": html_url(base_url, token, name) for name in sorted(campaign.fragments)})
    urls.update({f"form:{name}": form_url(base_url, token, name) for name in campaign.forms})
    urls.update({f"img:{name}": img_url(base_url, token, name) for name in campaign.images})
    urls.update({f"img2x:{name}": img_url(base_url, token, name, retina=True) for name in campaign.images})
    timers = countdown_urls(base_url, token, campaign, shared_token)
    urls.update({f"countdown:{name}": url for name, url in timers.items()})
    if campaign.has_email:
        urls["view"] = view_url(base_url, token)
    return urls


def template_urls(
    base_url: str, token: str, campaign: Campaign, shared_token: str | None = None
) -> dict[str, Any]:
    """The same URLs nested for templates: ``urls.list.picks``, ``urls.form.rate``, ``urls.img.banner``,
    ``urls.img2x.banner`` (retina), ``urls.countdown.sale`` and ``urls.countdown2x.sale`` (GIF; with
    ``shared_token``, campaign-wide timers use it), ``urls.view``."""
    return {
        "list": {name: list_url(base_url, token, name) for name in campaign.lists},
        "html": {name: html_url(base_url, token, name) for name in campaign.fragments},
        "form": {name: form_url(base_url, token, name) for name in campaign.forms},
        "img": {name: img_url(base_url, token, name) for name in campaign.images},
        "img2x": {name: img_url(base_url, token, name, retina=True) for name in campaign.images},
        "countdown": countdown_urls(base_url, token, campaign, shared_token),
        "countdown2x": countdown_urls(base_url, token, campaign, shared_token, retina=True),
        "view": view_url(base_url, token),
    }
