"""``opentime validate``: the official AMP validator on rendered AMP parts (or on HTML files).

Campaigns are rendered the way they are sent (with a throwaway signing key: only the shape of the
URLs matters to the validator) for a recipient without data, for each ``--profile`` JSON file and
for each ``--recipient`` read from the configured profile store, and every AMP part is validated in one
batch. Campaigns and the store are the ones ``opentime serve`` uses (``--templates``, ``--static`` and
``--database-url`` override them). Exit codes: 0 every part passes, 1 a part fails or a campaign does
not render, 2 a usage or configuration error or no validator.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click
import orjson

from app.campaigns.loader import load_campaigns
from app.campaigns.sendtime import SendTime
from app.campaigns.urls import PLACEHOLDER_BASE_URL
from app.campaigns.validator import AmpValidatorError, ValidationResult, locate
from app.cli.common import (
    config_option,
    database_option,
    read_setting,
    static_option,
    store_url,
    templates_option,
)
from app.config import PROJECT_ROOT
from app.errors import CampaignError
from app.render.email import EmailLimitError
from app.render.templates import TemplateError, Templates
from app.security.keyring import new_keyring
from app.security.tokens import TokenSigner
from app.store import open_store
from app.store.base import StoreError


@dataclass(frozen=True, slots=True)
class Sample:
    label: str
    recipient: str
    profile: dict[str, Any] | None


@dataclass(frozen=True, slots=True)
class Sources:
    templates: Path
    static: Path
    default_budget_ms: int


@click.command()
@config_option
@click.option("--campaign", "campaigns", multiple=True, help="Campaign to check (repeatable; default: all).")
@click.option("--recipient", "recipients", multiple=True, help="Also render for this stored recipient.")
@click.option(
    "--profile",
    "profiles",
    multiple=True,
    type=click.Path(path_type=Path, dir_okay=False, exists=True),
    help="Also render for the profile in this JSON file.",
)
@database_option
@templates_option
@static_option
@click.argument("files", nargs=-1, type=click.Path(path_type=Path, dir_okay=False, exists=True))
def validate(
    config: Path | None,
    campaigns: tuple[str, ...],
    recipients: tuple[str, ...],
    profiles: tuple[Path, ...],
    database_url: str | None,
    templates: Path | None,
    static: Path | None,
    files: tuple[Path, ...],
) -> None:
    """Run the official AMP validator on rendered AMP parts, or on the given HTML FILES."""
    samples = [] if files else collect_samples(profiles)
    if recipients and not files:
        samples += asyncio.run(_stored(store_url(config, database_url), recipients))
    sources = Sources(
        read_setting("templates_dir", config, templates),
        read_setting("static_dir", config, static),
        read_setting("default_budget_ms", config),
    )
    sys.exit(run_validate(sources, campaigns, samples, files))


def run_validate(
    sources: Sources, campaigns: tuple[str, ...], samples: list[Sample], files: tuple[Path, ...]
) -> int:
    validator = locate(PROJECT_ROOT)
    if validator is None:
        click.echo("error: AMP validator not installed: run tools/install-amp-validator.sh", err=True)
        return 2
    try:
        documents = dict(_file_documents(files)) if files else dict(_rendered(sources, campaigns, samples))
        results = validator.validate_many(list(documents.values()))
    except (CampaignError, TemplateError, EmailLimitError, AmpValidatorError, OSError) as exc:
        click.echo(f"error: {exc}", err=True)
        return 2 if isinstance(exc, AmpValidatorError) else 1
    return report(dict(zip(documents, results, strict=True)))


def report(results: dict[str, ValidationResult]) -> int:
    for label, result in results.items():
        click.echo(f"{result.status}  {label}")
        if not result.passed:
            click.echo("    " + result.format().replace("\n", "\n    "))
    failed = sum(not r.passed for r in results.values())
    click.echo(f"{len(results) - failed} passed, {failed} failed")
    return 1 if failed else 0


def _file_documents(files: tuple[Path, ...]) -> Iterator[tuple[str, str]]:
    for path in files:
        yield str(path), path.read_text(encoding="utf-8")


def _rendered(sources: Sources, names: tuple[str, ...], samples: list[Sample]) -> Iterator[tuple[str, str]]:
    campaigns = load_campaigns(
        sources.templates,
        sources.static,
        default_budget_ms=sources.default_budget_ms,
        public_base_url=PLACEHOLDER_BASE_URL,
    )
    signer = TokenSigner(new_keyring(datetime.now(UTC)))
    sendtime = SendTime(Templates(sources.templates), campaigns, signer, PLACEHOLDER_BASE_URL, time.time)
    for name in names or tuple(sorted(n for n, c in campaigns.items() if c.has_email)):
        for sample in samples:
            yield f"{name} / {sample.label}", sendtime.render(name, sample.recipient, sample.profile).amp


def collect_samples(profiles: tuple[Path, ...]) -> list[Sample]:
    samples = [Sample("recipient without data", "no-data", None)]
    for path in profiles:
        data = orjson.loads(path.read_bytes())
        if not isinstance(data, dict):
            raise click.BadParameter(f"{path} must hold a JSON object", param_hint="--profile")
        samples.append(Sample(f"profile {path.name}", path.stem, data))
    return samples


async def _stored(database_url: str, recipients: tuple[str, ...]) -> list[Sample]:
    store = open_store(database_url)
    await store.open()
    try:
        found = await store.profiles.get_many(list(recipients))
    except StoreError as exc:
        raise click.ClickException(str(exc)) from None
    finally:
        await store.close()
    return [
        Sample(
            f"recipient {rid}" + ("" if rid in found else " (no profile)"),
            rid,
            orjson.loads(found[rid].attributes) if rid in found else None,
        )
        for rid in recipients
    ]
