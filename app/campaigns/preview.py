"""The preview report: what one recipient gets from a campaign, opened at a chosen time.

Shared by ``GET /preview/{campaign}`` and ``opentime preview``. It holds the three parts as they
would be sent (limit problems are listed rather than raised, so a marketer sees what breaks), each
list block's JSON with its fallback reason, the block's HTML fragment, and the official AMP
validator's verdict on the AMP part. Blocks are shaped from the profile directly, bypassing the
open-time cache and budget: the reasons shown are data reasons (``unknown-recipient``, ``no-data``,
``bad-profile``), never ``budget-exceeded``.

The parts shown carry the server's ``public_base_url``, so their images load from this server. The
AMP part is validated as it would be sent: where that base is http (localhost, ``serve --demo``),
which AMP clients and the validator refuse, it is rendered again with the placeholder https origin
(``app.campaigns.urls.sending_base_url``) and the report says so.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

import orjson

from app.campaigns.loader import Campaign, ListBlock
from app.campaigns.sendtime import SendTime
from app.campaigns.urls import sending_base_url
from app.campaigns.validator import (
    INSTALL_HINT,
    AmpValidator,
    AmpValidatorError,
    ValidationError,
    ValidatorFailed,
)
from app.decisions.context import OpenContext
from app.decisions.decide import DEFAULT_PICKS, Decision, decide_all
from app.images.layout import FellBack, fell_back_layers
from app.open_time.reasons import Reason
from app.render.email import AMP_MAX_BYTES, HTML_CLIP_BYTES, EmailLimitError, EmailParts, check_limits
from app.render.json import render_list
from app.render.templates import TemplateError
from app.store.base import Profile

# part -> (limit in bytes, what happens over it)
PART_LIMITS: dict[str, tuple[int, str]] = {
    "amp": (AMP_MAX_BYTES, "rejected by Gmail"),
    "html": (HTML_CLIP_BYTES, "clipped by Gmail"),
}


@dataclass(frozen=True, slots=True)
class BlockPreview:
    """One list block as an open at the preview time would serve it."""

    name: str
    items: list[Any]
    fallback_reason: str | None
    fragment: str | None = None  # the block's HTML fragment, when the campaign has one

    @property
    def json(self) -> str:
        return orjson.dumps({"items": self.items}, option=orjson.OPT_INDENT_2).decode()


@dataclass(frozen=True, slots=True)
class ImagePreview:
    """One image block for this recipient: the layers an open would draw without their data, and why."""

    name: str
    fell_back: tuple[FellBack, ...]


@dataclass(frozen=True, slots=True)
class DecisionPreview:
    """Which variant a block shows this recipient at the preview's time and client, and why."""

    block: str
    variant: str
    experiment: str | None
    why: str  # the rule that matched, as written, or "no rule matched"

    def describe(self) -> str:
        test = f" (experiment {self.experiment})" if self.experiment else ""
        return f"{self.block}: {self.variant}{test}, because {self.why}"


# --client: what the open looks like (its fetch class and the device it reveals).
CLIENTS = {
    "direct": ("direct", "unknown"),
    "desktop": ("direct", "desktop"),
    "mobile": ("direct", "mobile"),
    "gmail": ("gmail-proxy", "unknown"),
    "apple": ("apple-mpp", "unknown"),
}


def open_as(
    campaign: Campaign, recipient: str, attributes: Mapping[str, Any] | None, at: float, client: str
) -> OpenContext:
    """The context of an open by ``client`` at ``at`` (``ValueError`` for an unknown client)."""
    if client not in CLIENTS:
        raise ValueError(f"client must be one of {', '.join(CLIENTS)}, got {client!r}")
    fetch_class, device = CLIENTS[client]
    profile = dict(attributes or {})
    zone = campaign.zones.of(profile)
    return OpenContext(at, zone, fetch_class, device, None, recipient, profile)  # type: ignore[arg-type]


@dataclass(frozen=True, slots=True)
class Verdict:
    """The AMP validator's answer: PASS or FAIL, else UNAVAILABLE / ERROR / SKIPPED with a note."""

    status: str
    errors: tuple[ValidationError, ...] = ()
    note: str = ""


@dataclass(frozen=True, slots=True)
class Report:
    campaign: Campaign
    recipient: str
    at: datetime
    attributes: Mapping[str, Any] | None  # the recipient's profile data
    profile_reason: str | None  # None when the profile was found and readable
    parts: EmailParts | None  # None when a template failed to render
    problems: tuple[str, ...]  # broken hard limits and template errors
    blocks: tuple[BlockPreview, ...]
    base_url: str  # the base URL of the parts shown: the server's public_base_url
    sent_base_url: str  # the base URL of the AMP part as sent: https, a placeholder when base_url is not
    sent_amp: str | None  # the AMP part as sent, what the validator checks (None: not rendered)
    images: tuple[ImagePreview, ...] = ()
    client: str = "direct"
    decisions: tuple[DecisionPreview, ...] = ()

    @property
    def placeholder_origin(self) -> bool:
        """True when the AMP part was validated with a placeholder origin instead of ``base_url``."""
        return self.sent_base_url != self.base_url

    @property
    def profile_json(self) -> str:
        return orjson.dumps(self.attributes, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS).decode()

    def part_rows(self) -> list[tuple[str, int, int | None, str]]:
        """(part, bytes, limit, note) for each part; note is "" when within its limit."""
        if self.parts is None:
            return []
        rows = []
        for part, size in self.parts.sizes().items():
            limit, consequence = PART_LIMITS.get(part, (None, ""))
            over = limit is not None and size > limit
            rows.append((part, size, limit, f"over the limit: {consequence}" if over else ""))
        return rows


def parse_at(value: str | None, now: float) -> datetime:
    """The simulated open time: ISO 8601 (a time without offset is UTC), or ``now`` when absent."""
    if value is None or not value.strip():
        return datetime.fromtimestamp(now, UTC).replace(microsecond=0)
    try:
        moment = datetime.fromisoformat(value.strip())
    except ValueError:
        example = "2025-06-01T09:30:00Z"
        raise ValueError(f"'at' must be an ISO 8601 time such as {example}, got {value!r}") from None
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    try:
        return moment.astimezone(UTC)
    except OverflowError:  # valid ISO 8601 whose UTC instant is before year 1 or after 9999
        raise ValueError(f"'at' is outside the years 1 to 9999 in UTC, got {value!r}") from None


def profile_attributes(profile: Profile | None) -> tuple[dict[str, Any] | None, str | None]:
    """The attributes and None, or None and why there are none."""
    if profile is None:
        return None, Reason.UNKNOWN_RECIPIENT
    try:
        data = orjson.loads(profile.attributes)
    except orjson.JSONDecodeError:
        return None, Reason.BAD_PROFILE
    return (data, None) if isinstance(data, dict) else (None, Reason.BAD_PROFILE)


def build_report(
    sendtime: SendTime,
    campaign: Campaign,
    recipient: str,
    attributes: Mapping[str, Any] | None,
    profile_reason: str | None,
    *,
    at: datetime,
    client: str = "direct",
) -> Report:
    """Render everything but the validator's verdict; raises ValueError for an unusable recipient id
    or client. Blocks with variants show the variant an open by ``client`` at ``at`` gets."""
    opened = open_as(campaign, recipient, attributes, at.timestamp(), client)
    decided = decide_all((campaign.lists, campaign.images), opened)
    decisions = tuple(DecisionPreview(n, d.variant, d.experiment, d.why) for n, d in sorted(decided.items()))
    parts, problems = render_parts(sendtime, campaign, recipient, attributes, at.timestamp(), opened)
    blocks, fragment_problems = block_previews(sendtime, campaign, attributes, profile_reason, decided)
    problems += fragment_problems
    images = tuple(
        ImagePreview(
            name, fell_back_layers(decided[name].block if name in decided else block, attributes or {}, at)
        )
        for name, block in sorted(campaign.images.items())
    )
    sent_base_url = sending_base_url(sendtime.base_url)
    sent_amp = parts.amp if parts else None
    if parts is not None and sent_base_url != sendtime.base_url:
        as_sent = replace(sendtime, base_url=sent_base_url)
        try:
            sent_amp = render_amp(as_sent, campaign, recipient, attributes, at.timestamp(), opened)
        except TemplateError as exc:  # only a template that branches on its own URLs gets here
            sent_amp, problems = None, (*problems, str(exc))
    return Report(
        campaign,
        recipient,
        at,
        attributes,
        profile_reason,
        parts,
        problems,
        blocks,
        base_url=sendtime.base_url,
        sent_base_url=sent_base_url,
        sent_amp=sent_amp,
        images=images,
        client=client,
        decisions=decisions,
    )


def render_parts(
    sendtime: SendTime,
    campaign: Campaign,
    recipient: str,
    attributes: Mapping[str, Any] | None,
    at: float,
    opened: OpenContext | None = None,
) -> tuple[EmailParts | None, tuple[str, ...]]:
    """The parts as ``SendTime.render`` makes them, kept for display even when they break a limit."""
    context = sendtime.context(campaign, recipient, attributes, at=at, opened=opened)
    try:
        parts = sendtime.parts(campaign, context)
    except TemplateError as exc:
        return None, (str(exc),)
    try:
        return check_limits(parts), ()
    except EmailLimitError as exc:
        return parts, tuple(exc.problems)


def render_amp(
    sendtime: SendTime,
    campaign: Campaign,
    recipient: str,
    attributes: Mapping[str, Any] | None,
    at: float,
    opened: OpenContext | None = None,
) -> str:
    """The AMP part alone, as ``render_parts`` renders it (to render it with another base URL)."""
    context = sendtime.context(campaign, recipient, attributes, at=at, opened=opened)
    return sendtime.templates.render(campaign.template("email.amp.html"), context)


def block_previews(
    sendtime: SendTime,
    campaign: Campaign,
    attributes: Mapping[str, Any] | None,
    profile_reason: str | None,
    decided: Mapping[str, Decision[Any]] | None = None,
) -> tuple[tuple[BlockPreview, ...], tuple[str, ...]]:
    previews = []
    problems = []
    for name, own in campaign.lists.items():
        block = decided[name].block if decided and name in decided else own
        items, reason = block_items(block, attributes, profile_reason)
        fragment = None
        if name in campaign.fragments:
            picks = decided[name].picks() if decided and name in decided else DEFAULT_PICKS
            try:
                fragment = render_fragment(sendtime, campaign, block, items, live=reason is None, picks=picks)
            except TemplateError as exc:
                problems.append(str(exc))
        previews.append(BlockPreview(name, items, reason, fragment))
    return tuple(previews), tuple(problems)


def block_items(
    block: ListBlock, attributes: Mapping[str, Any] | None, profile_reason: str | None
) -> tuple[list[Any], str | None]:
    body = None if attributes is None else render_list(block, dict(attributes))
    if body is None:
        items: list[Any] = orjson.loads(block.fallback_body)["items"]
        return items, profile_reason or Reason.NO_DATA
    live: list[Any] = orjson.loads(body)["items"]
    return live, None


def render_fragment(
    sendtime: SendTime,
    campaign: Campaign,
    block: ListBlock,
    items: list[Any],
    *,
    live: bool,
    picks: Mapping[str, Any] = DEFAULT_PICKS,
) -> str:
    # The same context as GET /v1/{token}/html/{block} (app.open_time.kinds.html).
    name = block.name.partition("~")[0]
    context = {
        "items": items,
        "live": live,
        "block": name,
        "campaign": {"name": campaign.name},
        "variant": picks,
    }
    template = block.name if block.name in campaign.fragment_variants else name
    return sendtime.templates.render(campaign.template(f"fragments/{template}.html"), context)


def validate(validator: AmpValidator | None, amp: str | None) -> Verdict:
    """Run the official validator (blocking, about a second: call it from a worker thread)."""
    if amp is None:
        return Verdict("SKIPPED", note="no AMP part was rendered")
    if validator is None:
        return Verdict("UNAVAILABLE", note=f"AMP validator not installed: {INSTALL_HINT}")
    try:
        result = validator.validate(amp)
    except ValidatorFailed as exc:
        return Verdict("ERROR", note=str(exc))
    except AmpValidatorError as exc:
        return Verdict("UNAVAILABLE", note=str(exc))
    return Verdict(result.status, result.errors)
