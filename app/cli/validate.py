"""``opentime validate``: the official AMP validator on rendered AMP parts (or on HTML files).

Campaigns are rendered the way they are sent (with a throwaway signing key: only the shape of the
URLs matters to the validator) for a recipient without data, for each ``--profile`` JSON file and
for each ``--recipient`` read from the profile store, and every AMP part is validated in one batch.
"""

from __future__ import annotations

import asyncio
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
from app.campaigns.validator import AmpValidatorError, ValidationResult, locate
from app.config import PROJECT_ROOT
from app.errors import CampaignError
from app.render.email import EmailLimitError
from app.render.templates import TemplateError, Templates
from app.security.keyring import new_keyring
from app.security.tokens import TokenSigner
from app.store import open_store
from app.store.base import StoreError

EXAMPLE_BASE_URL = "https://amp.example.com"


@dataclass(frozen=True, slots=True)
class Sample:
    label: str
    recipient: str
    profile: dict[str, Any] | None


@dataclass(frozen=True, slots=True)
class Sources:
    templates: Path
    static: Path
    database_url: str


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
    campaigns = load_campaigns(sources.templates, sources.static, default_budget_ms=150)
    signer = TokenSigner(new_keyring(datetime.now(UTC)))
    sendtime = SendTime(Templates(sources.templates), campaigns, signer, EXAMPLE_BASE_URL, time.time)
    for name in names or tuple(sorted(n for n, c in campaigns.items() if c.has_email)):
        for sample in samples:
            yield f"{name} / {sample.label}", sendtime.render(name, sample.recipient, sample.profile).amp


def collect_samples(
    database_url: str, profiles: tuple[Path, ...], recipients: tuple[str, ...]
) -> list[Sample]:
    samples = [Sample("recipient without data", "no-data", None)]
    for path in profiles:
        data = orjson.loads(path.read_bytes())
        if not isinstance(data, dict):
            raise click.BadParameter(f"{path} must hold a JSON object", param_hint="--profile")
        samples.append(Sample(f"profile {path.name}", path.stem, data))
    if recipients:
        samples += asyncio.run(_stored(database_url, recipients))
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
