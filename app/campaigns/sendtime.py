"""Send-time rendering: a campaign's three email parts for one recipient, with signed URLs filled in.

Pure given the recipient's attributes (the caller fetches profiles, in batches); used by
``opentime render``, ``POST /api/render``, the web view and the preview page.

Template context:
    recipient   {"id": ...}
    profile     the recipient's attributes (``{}`` when unknown; use ``| default(...)``)
    blocks      per list block: {"items": [...], "live": bool}: the data at send time, or the
                static fallback items (``live`` false) when the recipient has none (a block with
                variants: its chosen variant's); a click-tracked block's items carry ``click``, their
                click URL with the link they show sealed in it (``app.security.click_seal``)
    variants    per block with variants or rules: {"name", "experiment", "rule", "why"}, decided
                as of sending (or of the open, in views and previews)
    urls        urls.list.<block>, urls.html.<block>, urls.form.<block>, urls.view,
                urls.click.<block>[slot] (click-tracked blocks)
    campaign    {"name", "title"}
    now         the render time (UTC datetime): send time, or the open time in views and previews
    zone        the recipient's time zone (the campaign's ``zone_field`` in the profile, else its
                ``zone``): where the ``formatted`` filter shows dates
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson

from app.campaigns.loader import Campaign, ListBlock
from app.campaigns.urls import Tokens, mint, shared_token, template_urls
from app.decisions.clicks import safe_target
from app.decisions.context import OpenContext
from app.decisions.decide import Decision, decide_all
from app.decisions.exposure import DEFAULT_VARIANT
from app.errors import CampaignError
from app.render.email import EmailParts, check_limits
from app.render.json import render_list
from app.render.templates import Templates
from app.security.click_seal import ClickSealer, Sealed
from app.security.tokens import TokenSigner

Attributes = Mapping[str, Any] | None


@dataclass(frozen=True, slots=True)
class SendTime:
    """Everything rendering needs besides the recipient."""

    templates: Templates
    campaigns: Mapping[str, Campaign]
    signer: TokenSigner
    base_url: str
    clock: Callable[[], float]
    click_sealer: ClickSealer = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "click_sealer", ClickSealer(self.signer.ring))

    def campaign(self, name: str) -> Campaign:
        campaign = self.campaigns.get(name)
        if campaign is None:
            known = ", ".join(sorted(self.campaigns)) or "none"
            raise CampaignError(f"unknown campaign {name!r} (known: {known})")
        if not campaign.has_email:
            raise CampaignError(f"campaign {name!r} has no email templates (email.txt, .amp.html, .html)")
        return campaign

    def context(
        self,
        campaign: Campaign,
        recipient: str,
        attributes: Mapping[str, Any] | None,
        *,
        at: float | None = None,
        token: str | None = None,
        opened: OpenContext | None = None,
    ) -> dict[str, Any]:
        """With ``token`` (an open-time page), its URLs reuse the token that was presented: a page
        served at open time must never mint a fresh token, or any token could be renewed forever.
        ``opened``: the open's context (the web view, the preview), else decisions are made as of
        sending (fetch class ``send``)."""
        now = self.clock() if at is None else at
        if token is None:
            tokens = mint(self.signer, campaign, recipient, now=int(self.clock()))
        else:  # campaign-wide timers may still get a fresh shared token: it names nobody
            tokens = Tokens(token, token, shared_token(self.signer, campaign, now=int(self.clock())))
        profile = dict(attributes or {})
        if opened is None:
            zone = campaign.zones.of(profile)
            opened = OpenContext(now, zone, "send", recipient=recipient or None, profile=profile)
        decided = decide_all((campaign.lists, campaign.images), opened)
        shown = {name: decided[name].block if name in decided else b for name, b in campaign.lists.items()}
        urls = template_urls(self.base_url, tokens, campaign)
        sealing = Sealing(self.click_sealer, campaign.name, recipient)
        blocks = {}
        for name, block in shown.items():
            clicks = urls["click"].get(name)
            decision = decided.get(name)
            seal = None if clicks is None or not recipient else sealing.of(name, decision)
            blocks[name] = block_data(block, profile, clicks, seal)
        return {
            "recipient": {"id": recipient},
            "profile": profile,
            "blocks": blocks,
            "variants": {name: decision.picks() for name, decision in decided.items()},
            "urls": urls,
            "campaign": {"name": campaign.name, "title": campaign.title},
            "now": datetime.fromtimestamp(now, UTC),
            "zone": campaign.zones.of(profile),
        }

    def render(
        self,
        campaign_name: str,
        recipient: str,
        attributes: Mapping[str, Any] | None,
        *,
        at: float | None = None,
    ) -> EmailParts:
        """The three parts, limit-checked; raises CampaignError, TemplateError or EmailLimitError."""
        campaign = self.campaign(campaign_name)
        return check_limits(self.parts(campaign, self.context(campaign, recipient, attributes, at=at)))

    def parts(self, campaign: Campaign, context: Mapping[str, Any]) -> EmailParts:
        """The subject and the three parts rendered from ``context``, not yet limit-checked (the
        preview shows parts that break a limit); raises TemplateError."""
        templates = self.templates
        subject = templates.render_string(campaign.subject, context, where=f"{campaign.name} subject")
        return EmailParts(
            subject=one_line(subject),
            text=templates.render(campaign.template("email.txt"), context),
            amp=templates.render(campaign.template("email.amp.html"), context),
            html=templates.render(campaign.template("email.html"), context),
        )


def one_line(text: str) -> str:
    """Header values must not carry line breaks (header injection) or runs of spaces."""
    return " ".join(text.split())


@dataclass(frozen=True, slots=True)
class Sealing:
    """Seals what a send-time item links to into its click URL (``app.security.click_seal``)."""

    sealer: ClickSealer
    campaign: str
    recipient: str

    def of(self, block: str, decision: Decision[Any] | None) -> Callable[[int, str], str]:
        variant = DEFAULT_VARIANT if decision is None else decision.variant
        experiment = None if decision is None else decision.experiment

        def sealed(slot: int, link: str) -> str:
            shown = Sealed(variant, experiment, link)
            return self.sealer.seal(shown, self.campaign, self.recipient, block, slot)

        return sealed


def block_data(
    block: ListBlock,
    profile: Mapping[str, Any],
    clicks: list[str] | None = None,
    seal: Callable[[int, str], str] | None = None,
) -> dict[str, Any]:
    """The block's items as of now; a click-tracked block's items carry ``click``, their click URL,
    with (given ``seal``, and a recipient) what the item links to sealed in it: the HTML part shows
    these items for as long as the email lives, and its clicks must lead where it showed."""
    body = render_list(block, dict(profile))
    live = body is not None
    items = orjson.loads(body if body is not None else block.fallback_body)["items"]
    if clicks is not None:
        for slot, (item, url) in enumerate(zip(items, clicks, strict=False)):
            item["click"] = _click_url(url, block, item, slot, seal)
    return {"items": items, "live": live}


def _click_url(
    url: str, block: ListBlock, item: Mapping[str, Any], slot: int, seal: Callable[[int, str], str] | None
) -> str:
    link = item.get(block.click_field) if block.click_field is not None else None
    if seal is None or not isinstance(link, str) or not safe_target(link, block.click_hosts):
        return url  # the click follows what the open recorded, else the data of the click's time
    return f"{url}?to={seal(slot, link)}"
