"""``opentime render``: a campaign's email for one recipient, as the ESP would send it.

Reads the same settings as ``opentime serve`` (key ring, campaigns, profile store); ``--base-url``
overrides ``public_base_url``. An http base (localhost) renders URLs that AMP email clients and the AMP
validator refuse, so the command warns then. ``--format eml`` needs a From: ``--from``, else the
campaign's ``from``; without either it is refused (the other formats only warn). Exit codes: 0
rendered, 1 a campaign, template or store problem (or no From for an .eml), 2 a configuration error
or an invalid ``--from``/``--to``.
"""

from __future__ import annotations

import asyncio
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click
import orjson

from app.campaigns.loader import Campaign
from app.campaigns.sendtime import SendTime
from app.campaigns.urls import sending_base_url
from app.cli.common import config_option, fail, read_loaded, say_store
from app.config import Settings
from app.errors import CampaignError
from app.images.layout import fell_back_layers
from app.render.addresses import AddressError, Mailbox, parse_mailbox
from app.render.email import (
    EmailLimitError,
    EmailParts,
    address_warnings,
    missing_sender,
    parts_json,
    to_message,
)
from app.render.templates import TemplateError
from app.security.keyring import KeyRingError, load_keyring
from app.security.tokens import TokenSigner
from app.services import load_campaigns_for, load_templates
from app.store import open_store
from app.store.base import StoreError

PART_FILES = {"text": "email.txt", "amp": "email.amp.html", "html": "email.html"}


@dataclass(frozen=True, slots=True)
class Output:
    fmt: str
    out: Path | None
    sender: Mailbox | None
    to: Mailbox | None


@click.command()
@config_option
@click.option("--campaign", required=True)
@click.option("--recipient", required=True)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["eml", "json", "parts"]),
    default="eml",
    show_default=True,
    help="eml: a multipart/alternative message on stdout; json: the parts as JSON; parts: three files.",
)
@click.option(
    "--out", type=click.Path(path_type=Path, file_okay=False), default=None, help="Folder for --format parts."
)
@click.option(
    "--from",
    "sender",
    default=None,
    help="From header of the .eml (else the campaign's from; required).",
)
@click.option("--to", default=None, help="To header of the .eml (one address; IDN domains are encoded).")
@click.option("--base-url", default=None, help="Public base URL; overrides the public_base_url setting.")
def render(
    config: Path | None,
    campaign: str,
    recipient: str,
    fmt: str,
    out: Path | None,
    sender: str | None,
    to: str | None,
    base_url: str | None,
) -> None:
    """Render a campaign's three parts for a recipient, with signed URLs filled in."""
    output = Output(fmt=fmt, out=out, sender=option_mailbox("--from", sender), to=option_mailbox("--to", to))
    loaded = read_loaded(config, **({"public_base_url": base_url} if base_url is not None else {}))
    say_store(loaded.settings.database_url, loaded.sources["database_url"])
    warn_if_not_sendable(loaded.settings.public_base_url)
    sys.exit(run_render(loaded.settings, campaign, recipient, output))


def option_mailbox(option: str, value: str | None) -> Mailbox | None:
    """The checked address of ``--from`` or ``--to``; an invalid one exits 2 with one line saying why."""
    if value is None:
        return None
    try:
        return parse_mailbox(value)
    except AddressError as exc:
        fail(f"{option}: {exc}")


def warn_if_not_sendable(base_url: str) -> None:
    sendable = sending_base_url(base_url)
    if sendable != base_url:
        click.echo(
            f"warning: public_base_url {base_url} is http: AMP email clients and the AMP validator refuse"
            f" the AMP part's URLs; render the email as sent with --base-url https://<your host>"
            f" (e.g. --base-url {sendable})",
            err=True,
        )


def run_render(settings: Settings, campaign: str, recipient: str, output: Output) -> int:
    """Render and write the result; returns the exit code (1 on a campaign or template problem)."""
    try:
        sendtime = send_time(settings)
        spec = sendtime.campaign(campaign)  # fail on an unknown campaign before touching the store
        sender = output.sender or spec.sender
        if sender is None and output.fmt == "eml":
            click.echo(f"error: {missing_sender(spec.name)}: pass --from", err=True)
            return 1
        attributes = asyncio.run(fetch_attributes(settings.database_url, recipient))
        parts = sendtime.render(campaign, recipient, attributes)
    except (CampaignError, TemplateError, EmailLimitError, KeyRingError, StoreError) as exc:
        click.echo(f"error: {exc}", err=True)
        return 1
    warnings = [*parts.warnings, *message_warnings(spec, output.fmt, sender, output.to)]
    for warning in warnings:
        click.echo(f"warning: {warning}", err=True)
    for line in layer_notes(spec, attributes):
        click.echo(line, err=True)
    if output.fmt == "eml" and sender is not None:
        message = to_message(parts, sender=sender, to=output.to, now=sendtime.clock())
        sys.stdout.buffer.write(bytes(message))
    elif output.fmt == "json":
        item = {**parts_json(recipient, parts), "warnings": warnings}
        click.echo(orjson.dumps(item, option=orjson.OPT_INDENT_2).decode())
    else:
        write_parts(parts, output.out or Path.cwd())
    return 0


def message_warnings(spec: Campaign, fmt: str, sender: Mailbox | None, to: Mailbox | None) -> list[str]:
    if sender is None:
        return [f"{missing_sender(spec.name)}; .eml output needs one"]
    return address_warnings(sender, to) if fmt == "eml" else []


def layer_notes(campaign: Campaign, attributes: dict[str, Any] | None) -> list[str]:
    """Per image block, the layers this recipient's open would draw without their data, and why."""
    now = datetime.now(UTC)
    return [
        f"note: image {name}: {fell.describe()}"
        for name, block in sorted(campaign.images.items())
        for fell in fell_back_layers(block, attributes or {}, now)
    ]


def send_time(settings: Settings) -> SendTime:
    campaigns = load_campaigns_for(settings)
    return SendTime(
        load_templates(settings, campaigns),
        campaigns,
        TokenSigner(load_keyring(settings.keys_file), default_ttl_seconds=settings.token_ttl_days * 86400),
        settings.public_base_url,
        time.time,
    )


async def fetch_attributes(database_url: str, recipient: str) -> dict[str, Any] | None:
    store = open_store(database_url)
    await store.open()
    try:
        profile = await store.profiles.get(recipient)
    finally:
        await store.close()
    if profile is None:
        click.echo(f"note: no profile for {recipient!r}: rendering with fallback content", err=True)
        return None
    data = orjson.loads(profile.attributes)
    return data if isinstance(data, dict) else None


def write_parts(parts: EmailParts, folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for attribute, name in PART_FILES.items():
        path = folder / name
        path.write_text(getattr(parts, attribute), encoding="utf-8")
        click.echo(f"wrote {path} ({len(getattr(parts, attribute).encode())} bytes)")
    click.echo(f"subject: {parts.subject}")
