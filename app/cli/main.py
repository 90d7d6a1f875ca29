"""``opentime``: a thin command line over the same core the server uses.

Exit codes: 0 success, 1 the operation found a problem (invalid token, invalid rows), 2 a usage or
configuration error (missing/malformed setting, unreadable key ring or campaign).
"""

from __future__ import annotations

import csv
import os
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NoReturn, TextIO

import click
import orjson

from app.campaigns.loader import Campaign, load_campaigns
from app.campaigns.urls import campaign_urls
from app.cli.apikeys import apikeys
from app.cli.events import events
from app.cli.preview import preview
from app.config import DEFAULT_DATABASE_URL, FIELDS, PROJECT_ROOT, Settings, load_settings, masked
from app.errors import CampaignError, ConfigError
from app.security.keyring import (
    KeyRing,
    KeyRingError,
    load_keyring,
    new_keyring,
    remove,
    rotate,
    save_keyring,
)
from app.security.tokens import TokenError, TokenSigner, TokenVerifier, esp_campaign_key

DEFAULT_TEMPLATES = PROJECT_ROOT / "amp_templates"
DEFAULT_STATIC = PROJECT_ROOT / "static"


def fail(message: str, code: int = 2) -> NoReturn:
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


def now() -> int:
    return int(time.time())


def read_ring(path: Path) -> KeyRing:
    try:
        return load_keyring(path)
    except KeyRingError as exc:
        fail(str(exc))


def read_settings(config: Path | None, **overrides: Any) -> Settings:
    try:
        return load_settings(os.environ, config, **overrides).settings
    except ConfigError as exc:
        fail(str(exc))


def read_campaign(name: str, templates: Path, static: Path) -> Campaign:
    try:
        campaigns = load_campaigns(templates, static, default_budget_ms=150)
    except CampaignError as exc:
        fail(str(exc))
    if name not in campaigns:
        known = ", ".join(sorted(campaigns)) or "none"
        fail(f"unknown campaign {name!r} in {templates} (known: {known})")
    return campaigns[name]


keys_option = click.option(
    "--keys",
    "keys_file",
    type=click.Path(path_type=Path, dir_okay=False),
    envvar="OPENTIME_KEYS_FILE",
    required=True,
    help="Key ring file (env OPENTIME_KEYS_FILE).",
)
config_option = click.option(
    "--config",
    type=click.Path(path_type=Path, dir_okay=False, exists=True),
    default=None,
    help="TOML settings file (else OPENTIME_CONFIG, then OPENTIME_* variables).",
)
database_option = click.option(
    "--database-url", envvar="OPENTIME_DATABASE_URL", default=DEFAULT_DATABASE_URL, show_default=True
)
templates_option = click.option(
    "--templates",
    type=click.Path(path_type=Path, file_okay=False),
    default=DEFAULT_TEMPLATES,
    show_default=True,
    help="Campaigns folder.",
)
static_option = click.option(
    "--static",
    type=click.Path(path_type=Path, file_okay=False),
    default=DEFAULT_STATIC,
    show_default=True,
    help="Static fallback assets folder.",
)


@click.group()
@click.version_option(package_name="opentime")
def main() -> None:
    """Opentime: open-time email content server."""


main.add_command(apikeys)
main.add_command(preview)
main.add_command(events)


# --- settings ---


@main.command("check-config")
@config_option
def check_config(config: Path | None) -> None:
    """Print every setting with its value, source and help (secrets masked)."""
    try:
        loaded = load_settings(os.environ, config)
    except ConfigError as exc:
        fail(str(exc))
    for field in FIELDS:
        value = masked(field, getattr(loaded.settings, field.name))
        click.echo(f"{field.name} = {value}\n    source: {loaded.sources[field.name]}\n    {field.help}")
    ring = read_ring(loaded.settings.keys_file)
    click.echo(f"key ring: {len(ring)} key(s), signing with {ring.signing_key.kid}")
    try:
        campaigns = load_campaigns(
            loaded.settings.templates_dir,
            loaded.settings.static_dir,
            default_budget_ms=loaded.settings.default_budget_ms,
        )
    except CampaignError as exc:
        fail(str(exc))
    names = ", ".join(f"{c.name} ({len(c.lists)} blocks)" for c in campaigns.values())
    click.echo(f"campaigns: {names or 'none'}")


# --- keys ---


@main.group()
def keys() -> None:
    """Create and rotate the signing key ring."""


@keys.command("generate")
@click.option("--out", type=click.Path(path_type=Path, dir_okay=False), required=True)
@click.option("--force", is_flag=True, help="Overwrite an existing file.")
def keys_generate(out: Path, force: bool) -> None:
    """Write a new key ring with one key (file mode 0600)."""
    ring = new_keyring(datetime.now(UTC))
    try:
        save_keyring(ring, out, overwrite=force)
    except KeyRingError as exc:
        fail(str(exc))
    click.echo(f"wrote {out}: key {ring.signing_key.kid}")


@keys.command("rotate")
@keys_option
def keys_rotate(keys_file: Path) -> None:
    """Add a new newest key: it signs from now on, older keys still verify."""
    ring = rotate(read_ring(keys_file), datetime.now(UTC))
    save_keyring(ring, keys_file, overwrite=True)
    click.echo(f"added key {ring.signing_key.kid}; {len(ring)} key(s) in {keys_file}")


@keys.command("remove")
@keys_option
@click.option("--kid", required=True, help="Key id to retire (its tokens stop verifying).")
def keys_remove(keys_file: Path, kid: str) -> None:
    """Retire a key."""
    try:
        ring = remove(read_ring(keys_file), kid)
    except KeyRingError as exc:
        fail(str(exc))
    save_keyring(ring, keys_file, overwrite=True)
    click.echo(f"removed key {kid}; {len(ring)} key(s) left")


@keys.command("list")
@keys_option
def keys_list(keys_file: Path) -> None:
    """List key ids and creation times (never the secrets)."""
    ring = read_ring(keys_file)
    for key in ring:
        mark = "  (signs)" if key is ring.signing_key else ""
        click.echo(f"{key.kid}  {key.created.isoformat()}{mark}")


@keys.command("esp-key")
@keys_option
@click.option("--campaign", required=True)
def keys_esp_key(keys_file: Path, campaign: str) -> None:
    """Print the per-campaign HMAC key an ESP template uses to compute tokens itself."""
    ring = read_ring(keys_file)
    click.echo(f"kid: {ring.signing_key.kid}", err=True)
    click.echo(esp_campaign_key(ring.signing_key, campaign))


# --- tokens ---


@main.command()
@keys_option
@click.option("--campaign", required=True)
@click.option("--recipient", required=True, help="Recipient id; email addresses are sealed.")
@click.option("--ttl-days", type=click.IntRange(1, 3650), default=31, show_default=True)
@click.option("--variant", default=None)
@click.option("--base-url", envvar="OPENTIME_PUBLIC_BASE_URL", default=None, help="Also print the URLs.")
@templates_option
@static_option
def sign(
    keys_file: Path,
    campaign: str,
    recipient: str,
    ttl_days: int,
    variant: str | None,
    base_url: str | None,
    templates: Path,
    static: Path,
) -> None:
    """Mint a token; the token is the last line of output."""
    signer = TokenSigner(read_ring(keys_file))
    try:
        token = signer.sign(campaign, recipient, now=now(), ttl_seconds=ttl_days * 86400, variant=variant)
    except ValueError as exc:
        fail(str(exc))
    if base_url:
        for name, url in campaign_urls(
            base_url.rstrip("/"), token, read_campaign(campaign, templates, static)
        ).items():
            click.echo(f"{name}: {url}")
    click.echo(token)


@main.command()
@keys_option
@click.argument("token")
def verify(keys_file: Path, token: str) -> None:
    """Decode a token and say exactly why it fails, if it does."""
    try:
        claims = TokenVerifier(read_ring(keys_file)).verify(token, now=now())
    except TokenError as exc:
        click.echo(f"invalid ({exc.reason}): {exc}")
        sys.exit(1)
    click.echo(orjson.dumps(claims_dict(claims), option=orjson.OPT_INDENT_2).decode())


def claims_dict(claims: Any) -> dict[str, Any]:
    data = dict(claims._asdict())
    for stamp in ("issued_at", "expires_at"):
        if data.get(stamp) is not None:
            data[stamp + "_utc"] = datetime.fromtimestamp(data[stamp], UTC).isoformat()
    return data


@main.group()
def tokens() -> None:
    """Bulk token operations for ESP imports."""


@tokens.command("export")
@keys_option
@click.option("--campaign", required=True)
@click.option("--base-url", envvar="OPENTIME_PUBLIC_BASE_URL", required=True, help="Public https base URL.")
@click.option("--id-column", default="recipient_id", show_default=True)
@click.option("--ttl-days", type=click.IntRange(1, 3650), default=31, show_default=True)
@templates_option
@static_option
@click.argument("recipients", type=click.Path(path_type=Path, dir_okay=False, exists=True))
def tokens_export(
    keys_file: Path,
    campaign: str,
    base_url: str,
    id_column: str,
    ttl_days: int,
    templates: Path,
    static: Path,
    recipients: Path,
) -> None:
    """Add a token and the campaign's URLs to each row of a CSV (written to stdout)."""
    signer = TokenSigner(read_ring(keys_file))
    spec = read_campaign(campaign, templates, static)
    stamp = now()
    skipped = 0
    with recipients.open(newline="", encoding="utf-8-sig") as src:
        reader = csv.DictReader(src)
        if reader.fieldnames is None or id_column not in reader.fieldnames:
            fail(f"{recipients}: no {id_column!r} column in the header")
        url_columns = [f"url_{name.replace(':', '_')}" for name in campaign_urls(base_url, "t", spec)]
        writer = csv.DictWriter(sys.stdout, [*reader.fieldnames, "opentime_token", *url_columns])
        writer.writeheader()
        for line, row in _with_progress(reader, recipients, src):
            rid = (row.get(id_column) or "").strip()
            try:
                token = signer.sign(campaign, rid, now=stamp, ttl_seconds=ttl_days * 86400)
            except ValueError as exc:
                click.echo(f"line {line}: skipped: {exc}", err=True)
                skipped += 1
                continue
            urls = campaign_urls(base_url.rstrip("/"), token, spec).values()
            writer.writerow({**row, "opentime_token": token, **dict(zip(url_columns, urls, strict=True))})
    if skipped:
        fail(f"{skipped} row(s) skipped", code=1)


def _with_progress(
    reader: csv.DictReader[str], path: Path, src: TextIO
) -> Iterator[tuple[int, dict[str, str]]]:
    """Yield (line number, row) while drawing a progress bar on stderr."""
    total = path.stat().st_size
    with click.progressbar(length=total, label="signing", file=sys.stderr) as bar:
        done = 0
        for row in reader:
            position = src.buffer.tell() if hasattr(src, "buffer") else done
            bar.update(max(0, position - done))
            done = max(done, position)
            yield reader.line_num, row
        bar.update(total - done)


# --- data ---


@main.command("import")
@click.argument("file", type=click.Path(path_type=Path, dir_okay=False, exists=True))
@database_option
@click.option(
    "--format", "fmt", type=click.Choice(["jsonl", "csv"]), default=None, help="Else from the extension."
)
@click.option("--skip-invalid", is_flag=True, help="Load the valid rows even if some are invalid.")
@click.option("--batch-size", type=click.IntRange(1, 100_000), default=5000, show_default=True)
def import_(file: Path, database_url: str, fmt: str | None, skip_invalid: bool, batch_size: int) -> None:
    """Bulk-load profiles from JSONL or CSV (validated first; loaded in atomic batches; idempotent)."""
    from app.cli.profiles import run_import

    sys.exit(run_import(file, database_url, fmt=fmt, skip_invalid=skip_invalid, batch_size=batch_size))


# --- send time ---


@main.command()
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
@click.option("--from", "sender", default=None, help="From header of the .eml (else the campaign's).")
@click.option("--to", default=None, help="To header of the .eml.")
def render(
    config: Path | None,
    campaign: str,
    recipient: str,
    fmt: str,
    out: Path | None,
    sender: str | None,
    to: str | None,
) -> None:
    """Render a campaign's three parts for a recipient, with signed URLs filled in."""
    from app.cli.render import Output, run_render

    output = Output(fmt=fmt, out=out, sender=sender, to=to)
    sys.exit(run_render(read_settings(config), campaign, recipient, output))


@main.command()
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
    campaigns: tuple[str, ...],
    recipients: tuple[str, ...],
    profiles: tuple[Path, ...],
    database_url: str,
    templates: Path,
    static: Path,
    files: tuple[Path, ...],
) -> None:
    """Run the official AMP validator on rendered AMP parts, or on the given HTML FILES."""
    from app.cli.validate import Sources, collect_samples, run_validate

    samples = [] if files else collect_samples(database_url, profiles, recipients)
    sys.exit(run_validate(Sources(templates, static, database_url), campaigns, samples, files))


# --- server ---


@main.command()
@config_option
@click.option("--demo", is_flag=True, help="Throwaway keys, demo campaign and 1,000 synthetic recipients.")
@click.option("--host", default=None, help="Bind address (setting host).")
@click.option("--port", type=int, default=None, help="Bind port (setting port).")
@click.option(
    "--workers", type=click.IntRange(1, 64), default=None, help="Worker processes (setting workers)."
)
def serve(config: Path | None, demo: bool, host: str | None, port: int | None, workers: int | None) -> None:
    """Run the server (uvicorn with httptools and uvloop)."""
    from app.cli.serve import run_demo, run_server

    overrides = {k: v for k, v in (("host", host), ("port", port), ("workers", workers)) if v is not None}
    if demo:
        run_demo(config, overrides)
    else:
        run_server(read_settings(config, **overrides), config)
