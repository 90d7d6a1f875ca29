"""``opentime keys``, ``sign``, ``verify`` and ``tokens export``: the key ring and the tokens it signs.

The key ring is the ``keys_file`` setting (``--keys`` overrides it); campaigns come from the
``templates_dir`` and ``static_dir`` settings, as ``opentime serve`` loads them.
"""

from __future__ import annotations

import csv
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

import click
import orjson

from app.campaigns.urls import DAY, Tokens, campaign_urls, html_token, mint, shared_token
from app.cli.common import (
    config_option,
    fail,
    keys_option,
    keys_path,
    pick_campaign,
    read_campaigns,
    read_ring,
    read_setting,
    read_sourced,
    static_option,
    templates_option,
)
from app.security.keyring import KeyRingError, new_keyring, remove, rotate, save_keyring
from app.security.tokens import TokenError, TokenSigner, TokenVerifier, esp_campaign_key

base_url_option = click.option(
    "--base-url", default=None, help="Public base URL; overrides the public_base_url setting."
)


# The AMP-part token's lifetime; what the HTML part shows always lives the campaign's html_lifetime_days.
amp_ttl_option = click.option(
    "--ttl-days",
    type=click.IntRange(1, 3650),
    default=None,
    help="Lifetime of the (AMP-part) token [default: the token_ttl_days setting]; URLs the HTML part "
    "shows (and the opentime_html_token column) live the campaign's html_lifetime_days.",
)


def now() -> int:
    return int(time.time())


@click.group()
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
@config_option
@keys_option
def keys_rotate(config: Path | None, keys_file: Path | None) -> None:
    """Add a new newest key: it signs from now on, older keys still verify."""
    path = keys_path(config, keys_file)
    ring = rotate(read_ring(path), datetime.now(UTC))
    save_keyring(ring, path, overwrite=True)
    click.echo(f"added key {ring.signing_key.kid}; {len(ring)} key(s) in {path}")


@keys.command("remove")
@config_option
@keys_option
@click.option("--kid", required=True, help="Key id to retire (its tokens stop verifying).")
def keys_remove(config: Path | None, keys_file: Path | None, kid: str) -> None:
    """Retire a key."""
    path = keys_path(config, keys_file)
    try:
        ring = remove(read_ring(path), kid)
    except KeyRingError as exc:
        fail(str(exc))
    save_keyring(ring, path, overwrite=True)
    click.echo(f"removed key {kid}; {len(ring)} key(s) left in {path}")


@keys.command("list")
@config_option
@keys_option
def keys_list(config: Path | None, keys_file: Path | None) -> None:
    """List key ids and creation times (never the secrets)."""
    ring = read_ring(keys_path(config, keys_file))
    for key in ring:
        mark = "  (signs)" if key is ring.signing_key else ""
        click.echo(f"{key.kid}  {key.created.isoformat()}{mark}")


@keys.command("esp-key")
@config_option
@keys_option
@click.option("--campaign", required=True)
def keys_esp_key(config: Path | None, keys_file: Path | None, campaign: str) -> None:
    """Print the per-campaign HMAC key an ESP template uses to compute tokens itself."""
    ring = read_ring(keys_path(config, keys_file))
    click.echo(f"kid: {ring.signing_key.kid}", err=True)
    click.echo(esp_campaign_key(ring.signing_key, campaign))


@click.command()
@config_option
@keys_option
@click.option("--campaign", required=True)
@click.option("--recipient", required=True, help="Recipient id; email addresses are sealed.")
@amp_ttl_option
@click.option("--variant", default=None)
@base_url_option
@templates_option
@static_option
def sign(
    config: Path | None,
    keys_file: Path | None,
    campaign: str,
    recipient: str,
    ttl_days: int | None,
    variant: str | None,
    base_url: str | None,
    templates: Path | None,
    static: Path | None,
) -> None:
    """Mint a token; the token is the last line of output (after the URLs when a base URL is set)."""
    signer = TokenSigner(read_ring(keys_path(config, keys_file)))
    ttl = read_setting("token_ttl_days", config, ttl_days) * DAY
    stamp = now()
    try:
        token = signer.sign(campaign, recipient, now=stamp, ttl_seconds=ttl, variant=variant)
    except ValueError as exc:
        fail(str(exc))
    public: str | None = read_setting("public_base_url", config, base_url, needed=False)
    if public:
        spec = pick_campaign(read_campaigns(config, templates, static, public), campaign)
        html = token if variant is not None else html_token(signer, spec, recipient, now=stamp)
        tokens = Tokens(token, html, shared_token(signer, spec, now=stamp))
        for name, url in campaign_urls(public, tokens, spec).items():
            click.echo(f"{name}: {url}")
    click.echo(token)


@click.command()
@config_option
@keys_option
@click.argument("token")
def verify(config: Path | None, keys_file: Path | None, token: str) -> None:
    """Decode a token and say exactly why it fails, if it does."""
    try:
        claims = TokenVerifier(read_ring(keys_path(config, keys_file))).verify(token, now=now())
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


@click.group()
def tokens() -> None:
    """Bulk token operations for ESP imports."""


@tokens.command("export")
@config_option
@keys_option
@click.option("--campaign", required=True)
@base_url_option
@click.option("--id-column", default="recipient_id", show_default=True)
@amp_ttl_option
@templates_option
@static_option
@click.argument("recipients", type=click.Path(path_type=Path, dir_okay=False, exists=True))
def tokens_export(
    config: Path | None,
    keys_file: Path | None,
    campaign: str,
    base_url: str | None,
    id_column: str,
    ttl_days: int | None,
    templates: Path | None,
    static: Path | None,
    recipients: Path,
) -> None:
    """Add a token and the campaign's URLs to each row of a CSV (written to stdout)."""
    path, source = read_sourced("keys_file", config, keys_file)
    click.echo(f"keys: {path} ({source})", err=True)
    signer = TokenSigner(read_ring(path))
    public: str = read_setting("public_base_url", config, base_url)
    spec = pick_campaign(read_campaigns(config, templates, static, public), campaign)
    amp_ttl = read_setting("token_ttl_days", config, ttl_days) * DAY
    stamp = now()
    skipped = 0
    with recipients.open(newline="", encoding="utf-8-sig") as src:
        reader = csv.DictReader(src)
        if reader.fieldnames is None or id_column not in reader.fieldnames:
            fail(f"{recipients}: no {id_column!r} column in the header")
        example = Tokens("t", "t", "t")
        url_columns = [f"url_{name.replace(':', '_')}" for name in campaign_urls(public, example, spec)]
        token_columns = ["opentime_token", "opentime_html_token"]
        writer = csv.DictWriter(sys.stdout, [*reader.fieldnames, *token_columns, *url_columns])
        writer.writeheader()
        for line, row in _with_progress(reader, recipients, src):
            rid = (row.get(id_column) or "").strip()
            try:
                tokens = mint(signer, spec, rid, now=stamp, amp_ttl_seconds=amp_ttl)
            except ValueError as exc:
                click.echo(f"line {line}: skipped: {exc}", err=True)
                skipped += 1
                continue
            urls = campaign_urls(public, tokens, spec).values()
            columns = dict(zip(token_columns, (tokens.amp, tokens.html), strict=True))
            writer.writerow({**row, **columns, **dict(zip(url_columns, urls, strict=True))})
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
