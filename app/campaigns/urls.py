"""The open-time URLs minted for a campaign (pure: base URL + tokens + blocks in, URLs out).

One email carries tokens of two lifetimes, by purpose (``Tokens``): the AMP part's amp-list and
amp-form URLs get the AMP-sized lifetime (Gmail stops showing the AMP part after 30 days), and every
URL the HTML part shows too (images, countdowns, fragments, the web view) gets the campaign's
``html_lifetime_days``, because Apple Mail, Outlook and Yahoo readers open the HTML part for months.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import orjson

from app.campaigns.loader import Campaign
from app.security.tokens import TokenSigner

DAY = 86_400


@dataclass(frozen=True, slots=True)
class Tokens:
    """One recipient's tokens for one email."""

    amp: str  # amp-list and amp-form URLs: the AMP-sized lifetime
    html: str  # images, countdowns, fragments and the web view: the campaign's lifetime
    shared: str | None = None  # campaign-wide countdowns (no recipient: one CDN copy for everyone)


def mint(
    signer: TokenSigner, campaign: Campaign, recipient: str, *, now: int, amp_ttl_seconds: int | None = None
) -> Tokens:
    """The tokens of ``recipient``'s email: the AMP part's lifetime (default: the signer's), the
    campaign's ``html_lifetime_days`` for the rest (and for the campaign-wide countdown token)."""
    return Tokens(
        amp=signer.sign(campaign.name, recipient, now=now, ttl_seconds=amp_ttl_seconds),
        html=html_token(signer, campaign, recipient, now=now),
        shared=shared_token(signer, campaign, now=now),
    )


def html_token(signer: TokenSigner, campaign: Campaign, recipient: str, *, now: int) -> str:
    """The recipient's token for what the HTML part shows, with the campaign's ``html_lifetime_days``."""
    return signer.sign(campaign.name, recipient, now=now, ttl_seconds=campaign.html_lifetime_days * DAY)


def shared_token(signer: TokenSigner, campaign: Campaign, *, now: int) -> str | None:
    """The campaign-wide token of its shared countdowns (None without one), with the HTML lifetime."""
    if not any(block.shared for block in campaign.countdowns.values()):
        return None
    return signer.sign_shared(campaign.name, now=now, ttl_seconds=campaign.html_lifetime_days * DAY)


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
    base_url: str, tokens: Tokens, campaign: Campaign, *, retina: bool = False
) -> dict[str, str]:
    """Animated countdown GIFs: a campaign-wide timer gets the shared token when there is one (one CDN
    copy for every recipient), a per-recipient timer the recipient's HTML-lifetime token."""
    return {
        name: img_url(
            base_url,
            tokens.shared if block.shared and tokens.shared else tokens.html,
            name,
            ext="gif",
            retina=retina,
        )
        for name, block in campaign.countdowns.items()
    }


def campaign_urls(base_url: str, tokens: Tokens, campaign: Campaign) -> dict[str, str]:
    """Every URL of the campaign for one recipient, keyed ``<kind>:<block>`` (for CSV exports)."""
    amp, html = tokens.amp, tokens.html
    urls = {f"list:{name}": list_url(base_url, amp, name) for name in campaign.lists}
    urls.update({f"html:{name}": html_url(base_url, html, name) for name in sorted(campaign.fragments)})
    urls.update({f"form:{name}": form_url(base_url, amp, name) for name in campaign.forms})
    urls.update({f"img:{name}": img_url(base_url, html, name) for name in campaign.images})
    urls.update({f"img2x:{name}": img_url(base_url, html, name, retina=True) for name in campaign.images})
    timers = countdown_urls(base_url, tokens, campaign)
    urls.update({f"countdown:{name}": url for name, url in timers.items()})
    if campaign.has_email:
        urls["view"] = view_url(base_url, html)
    return urls


def template_urls(base_url: str, tokens: Tokens, campaign: Campaign) -> dict[str, Any]:
    """The same URLs nested for templates: ``urls.list.picks``, ``urls.form.rate``, ``urls.img.banner``,
    ``urls.img2x.banner`` (retina), ``urls.countdown.sale`` and ``urls.countdown2x.sale`` (GIF;
    campaign-wide timers use the shared token), ``urls.view``."""
    amp, html = tokens.amp, tokens.html
    return {
        "list": {name: list_url(base_url, amp, name) for name in campaign.lists},
        "html": {name: html_url(base_url, html, name) for name in campaign.fragments},
        "form": {name: form_url(base_url, amp, name) for name in campaign.forms},
        "img": {name: img_url(base_url, html, name) for name in campaign.images},
        "img2x": {name: img_url(base_url, html, name, retina=True) for name in campaign.images},
        "countdown": countdown_urls(base_url, tokens, campaign),
        "countdown2x": countdown_urls(base_url, tokens, campaign, retina=True),
        "view": view_url(base_url, html),
        "click": click_urls(base_url, html, campaign),
    }


def click_url(base_url: str, token: str, block: str, slot: int) -> str:
    """Click-through (``app.decisions.clicks``): a 302 to the link of what slot ``slot`` showed."""
    return f"{base_url}/v1/{token}/click/{block}/{slot}"


def click_urls(base_url: str, token: str, campaign: Campaign) -> dict[str, list[str]]:
    """Per click-tracked block, its click URL for every slot: list items (up to ``max_items`` of the
    block and its variants), one for an image with a ``link``."""
    urls = {}
    for name, block in campaign.lists.items():
        if block.click_field is not None:
            urls[name] = [click_url(base_url, token, name, slot) for slot in range(_slots(block))]
    for name, image in campaign.images.items():
        if _links(image):
            urls[name] = [click_url(base_url, token, name, 0)]
    return urls


def _slots(block: Any) -> int:
    """Items the block can show: its (and its variants') ``max_items``, or its fallback's count."""
    blocks = [block, *(() if block.decider is None else block.decider.variants.values())]
    counts: list[int] = [b.max_items for b in blocks]
    counts += [len(orjson.loads(b.fallback_body)["items"]) for b in blocks]
    return max(counts)


def _links(image: Any) -> bool:
    variants = () if image.decider is None else image.decider.variants.values()
    return image.link is not None or any(variant.link is not None for variant in variants)
