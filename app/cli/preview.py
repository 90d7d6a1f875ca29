"""``opentime preview``: the preview report in the terminal, or the URL of the preview page.

The AMP part is validated as it would be sent, with a placeholder https origin when
``public_base_url`` is http (localhost); the report names the origin it used.

Exit codes: 0 the campaign renders within its limits and the validator did not fail it (a missing
validator only warns), 1 a limit, template or validation problem, 2 a usage or configuration error.
"""

from __future__ import annotations

import asyncio
import sys
import time
from datetime import datetime
from pathlib import Path
from urllib.parse import quote, urlencode

import click

from app.campaigns.preview import (
    CLIENTS,
    Report,
    Verdict,
    build_report,
    parse_at,
    profile_attributes,
    validate,
)
from app.campaigns.sendtime import SendTime
from app.campaigns.validator import locate
from app.cli.common import config_option, fail, read_loaded, say_store
from app.config import PROJECT_ROOT, Settings
from app.errors import CampaignError
from app.render.templates import TemplateError
from app.security.keyring import KeyRingError, load_keyring
from app.security.tokens import TokenSigner
from app.services import load_campaigns_for, load_templates
from app.store import open_store
from app.store.base import Profile, StoreError


@click.command("preview")
@config_option
@click.option("--campaign", required=True)
@click.option("--recipient", required=True)
@click.option("--at", default=None, help="Simulated open time, ISO 8601 (no offset means UTC); default now.")
@click.option(
    "--client",
    type=click.Choice(sorted(CLIENTS)),
    default="direct",
    show_default=True,
    help="Who opens: gmail (image proxy), apple (privacy prefetch), direct (mobile/desktop: its device).",
)
@click.option("--url", "url_only", is_flag=True, help="Print the preview page's URL instead of the report.")
@click.option("--open", "open_page", is_flag=True, help="Open the preview page in a browser.")
@click.option("--base-url", default=None, help="Base URL of the running server (default public_base_url).")
def preview(
    config: Path | None,
    campaign: str,
    recipient: str,
    at: str | None,
    client: str,
    url_only: bool,
    open_page: bool,
    base_url: str | None,
) -> None:
    """Show what a recipient gets from a campaign at an open time: parts, blocks, AMP validation."""
    loaded = read_loaded(config)
    settings = loaded.settings
    try:
        moment = parse_at(at, time.time())
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--at") from None
    if url_only or open_page:
        url = preview_url(base_url or settings.public_base_url, campaign, recipient, at, client)
        click.echo(url)
        if open_page:
            click.launch(url)
        return
    say_store(settings.database_url, loaded.sources["database_url"])
    report = make_report(settings, campaign, recipient, moment, client)
    verdict = validate(locate(PROJECT_ROOT), report.sent_amp)
    click.echo(format_report(report, verdict))
    sys.exit(1 if report.problems or verdict.status in ("FAIL", "ERROR") else 0)


def preview_url(base_url: str, campaign: str, recipient: str, at: str | None, client: str = "direct") -> str:
    query = {
        "recipient": recipient,
        **({"at": at} if at else {}),
        **({"client": client} if client != "direct" else {}),
    }
    return f"{base_url.rstrip('/')}/preview/{quote(campaign, safe='')}?{urlencode(query)}"


def make_report(
    settings: Settings, campaign: str, recipient: str, at: datetime, client: str = "direct"
) -> Report:
    try:
        campaigns = load_campaigns_for(settings)
        ring = load_keyring(settings.keys_file)
        sendtime = SendTime(
            load_templates(settings, campaigns),
            campaigns,
            TokenSigner(ring, default_ttl_seconds=settings.token_ttl_days * 86400),
            settings.public_base_url,
            time.time,
        )
        spec = sendtime.campaign(campaign)
        attributes, reason = profile_attributes(asyncio.run(fetch_profile(settings.database_url, recipient)))
        return build_report(sendtime, spec, recipient, attributes, reason, at=at, client=client)
    except (CampaignError, TemplateError, KeyRingError, StoreError) as exc:
        fail(str(exc))
    except ValueError as exc:
        fail(f"bad recipient: {exc}")


async def fetch_profile(database_url: str, recipient: str) -> Profile | None:
    store = open_store(database_url)
    await store.open()
    try:
        return await store.profiles.get(recipient)
    finally:
        await store.close()


def format_report(report: Report, verdict: Verdict) -> str:
    lines = [
        f"campaign   {report.campaign.name} ({report.campaign.title})",
        f"recipient  {report.recipient} ({profile_state(report.profile_reason)})",
        f"open time  {report.at.isoformat().replace('+00:00', 'Z')}",
        f"opened by  {report.client}",
        f"subject    {report.parts.subject if report.parts else '-'}",
        "",
        "parts",
    ]
    for part, size, limit, note in report.part_rows():
        bound = f" / {limit:,}" if limit else ""
        lines.append(f"  {part:<5} {size:>9,} bytes{bound}  {note}".rstrip())
    lines += [f"  error: {problem}" for problem in report.problems]
    lines += [f"  warning: {warning}" for warning in (report.parts.warnings if report.parts else ())]
    lines += ["", "blocks"]
    for block in report.blocks:
        state = "live" if block.fallback_reason is None else f"fallback ({block.fallback_reason})"
        fragment = f", fragment {len(block.fragment.encode()):,} bytes" if block.fragment is not None else ""
        lines.append(f"  {block.name}: {state}, {len(block.items)} item(s){fragment}")
        lines += [f"    {line}" for line in block.json.splitlines()]
    if report.decisions:
        lines += ["", "decisions"]
        lines += [f"  {decision.describe()}" for decision in report.decisions]
    if report.images:
        lines += ["", "image blocks"]
    for image in report.images:
        state = "every layer has its data" if not image.fell_back else "layers drawn without their data:"
        lines.append(f"  {image.name}: {state}")
        lines += [f"    {fell.describe()}" for fell in image.fell_back]
    lines += ["", f"AMP validator: {verdict.status}" + (f" ({verdict.note})" if verdict.note else "")]
    if report.sent_amp is not None:
        lines.append(f"  {validated_origin(report)}")
    lines += [f"  {error.format()}" for error in verdict.errors]
    return "\n".join(lines)


def validated_origin(report: Report) -> str:
    if not report.placeholder_origin:
        return f"the AMP part as sent, URLs on {report.sent_base_url} (public_base_url)"
    return (
        f"the AMP part as sent, URLs on the placeholder {report.sent_base_url}: public_base_url "
        f"{report.base_url} is http, which AMP email clients and the validator refuse"
    )


def profile_state(reason: str | None) -> str:
    return "profile found" if reason is None else f"no profile ({reason}): fallback content"
