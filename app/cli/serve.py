"""``opentime serve``: check everything a worker needs, then hand over to uvicorn.

Workers build their own app from the environment (``uvicorn --factory``), so a config file is
passed to them through ``OPENTIME_CONFIG``; checking keys and campaigns here first turns a bad
deployment into a clear message and exit code 2 instead of a crash loop of workers.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click
import uvicorn

from app.campaigns.loader import Campaign
from app.campaigns.urls import html_url, img_url, list_url, mint, shared_token, view_url
from app.cli.common import config_option, fail, read_settings
from app.config import CONFIG_ENV, Settings, load_settings
from app.demo import DEMO_SENDER, demo_rows, recipient_id
from app.errors import CampaignError, ConfigError
from app.security.keyring import KeyRingError, load_keyring, new_keyring, save_keyring
from app.security.tokens import TokenSigner
from app.services import load_campaigns_for
from app.store import open_store

DEMO_RECIPIENTS = 1000


@click.command()
@config_option
@click.option("--demo", is_flag=True, help="Throwaway keys, demo campaign and 1,000 synthetic recipients.")
@click.option("--host", default=None, help="Bind address (setting host).")
@click.option("--port", type=int, default=None, help="Bind port (setting port).")
@click.option(
    "--workers", type=click.IntRange(1, 64), default=None, help="Worker processes (setting workers)."
)
def serve(config: Path | None, demo: bool, host: str | None, port: int | None, workers: int | None) -> None:
    """Run the server (uvicorn with httptools and uvloop)."""
    overrides = {k: v for k, v in (("host", host), ("port", port), ("workers", workers)) if v is not None}
    if demo:
        run_demo(config, overrides)
    else:
        run_server(read_settings(config, **overrides), config)


def run_server(settings: Settings, config_file: Path | None) -> None:
    try:
        load_keyring(settings.keys_file)
        campaigns = load_campaigns_for(settings)
    except (KeyRingError, CampaignError) as exc:
        fail(str(exc))
    if not campaigns:
        click.echo(f"warning: no campaigns in {settings.templates_dir}", err=True)
    if config_file is not None:
        os.environ[CONFIG_ENV] = str(config_file.resolve())
    uvicorn.run(
        "app.app:serve_app",
        factory=True,
        host=settings.host,
        port=settings.port,
        workers=settings.workers,
        loop="uvloop",
        http="httptools",
        proxy_headers=True,
        forwarded_allow_ips=settings.forwarded_allow_ips,
        access_log=settings.access_log,
        log_level=settings.log_level,
        server_header=False,
    )


def run_demo(config_file: Path | None, overrides: dict[str, Any]) -> None:
    """Serve the demo campaign with throwaway keys and synthetic recipients from a temp folder."""
    with tempfile.TemporaryDirectory(prefix="opentime-demo-") as tmp:
        folder = Path(tmp)
        settings = demo_settings(folder, overrides)
        ring = new_keyring(datetime.now(UTC))
        save_keyring(ring, settings.keys_file, overwrite=False)
        asyncio.run(load_demo_profiles(settings.database_url))
        config = write_toml(folder / "opentime.toml", settings)
        print_demo_banner(settings, load_campaigns_for(settings), TokenSigner(ring), config)
        run_server(settings, config)


def demo_settings(folder: Path, overrides: dict[str, Any]) -> Settings:
    host = overrides.get("host", "127.0.0.1")
    port = overrides.get("port", 8000)
    url_host = "127.0.0.1" if host in ("0.0.0.0", "::") else host  # noqa: S104 - only a display choice
    env = {"OPENTIME_PUBLIC_BASE_URL": f"http://{url_host}:{port}"}
    try:
        return load_settings(
            env,
            None,
            keys_file=str(folder / "keys.json"),
            allowed_senders=DEMO_SENDER,
            webhook_secrets=secrets.token_urlsafe(24),
            database_url=f"sqlite:///{folder / 'demo.db'}",
            **overrides,
        ).settings
    except ConfigError as exc:
        fail(str(exc))


async def load_demo_profiles(database_url: str) -> None:
    store = open_store(database_url)
    await store.open()
    try:
        await store.profiles.upsert_many(list(demo_rows(DEMO_RECIPIENTS)))
    finally:
        await store.close()


def write_toml(path: Path, settings: Settings) -> Path:
    lines = []
    for name in ("public_base_url", "keys_file", "database_url", "host", "port", "workers"):
        value = getattr(settings, name)
        lines.append(f"{name} = {value}" if isinstance(value, int) else f'{name} = "{value}"')
    for name in ("allowed_senders", "webhook_secrets"):
        items = ", ".join(f'"{item}"' for item in getattr(settings, name))
        lines.append(f"{name} = [{items}]")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def print_demo_banner(
    settings: Settings, campaigns: dict[str, Campaign], signer: TokenSigner, config: Path
) -> None:
    now = int(datetime.now(UTC).timestamp())
    base = settings.public_base_url
    click.echo(f"Opentime demo: {DEMO_RECIPIENTS} synthetic recipients, sender {DEMO_SENDER}")
    click.echo(f"keys and data in a temporary folder: {settings.keys_file.parent} (deleted on exit)\n")
    demo = campaigns["demo"]
    for index in (1, 2):
        tokens = mint(signer, demo, recipient_id(index), now=now)
        click.echo(f"recipient {recipient_id(index)}:")
        for name in demo.lists:
            click.echo(f"  curl -H 'AMP-Email-Sender: {DEMO_SENDER}' {list_url(base, tokens.amp, name)}")
        for name in sorted(demo.fragments):
            click.echo(f"  curl {html_url(base, tokens.html, name)}")
        for name in sorted(demo.images):
            click.echo(f"  image (open in a browser): {img_url(base, tokens.html, name)}")
        click.echo(f"  web view (open in a browser): {view_url(base, tokens.html)}")
    shared = shared_token(signer, demo, now=now) or signer.sign_shared("demo", now=now)
    click.echo("campaign-wide countdown (no recipient in the URL: one render a minute serves everyone):")
    for name in sorted(campaigns["demo"].countdowns):
        click.echo(f"  countdown (open in a browser): {img_url(base, shared, name, ext='gif')}")
    bad = signer.sign("demo", recipient_id(1), now=now)[:-3] + "AAA"
    click.echo("a tampered token (the block's static fallback items; X-Opentime-Fallback says why):")
    click.echo(f"  curl -i -H 'AMP-Email-Sender: {DEMO_SENDER}' {list_url(base, bad, 'picks')}")
    click.echo(f"send a signed event; the next open of {recipient_id(1)} shows the new name:")
    payload = '{"first_name": "Zoe"}'
    click.echo(
        f"  OPENTIME_WEBHOOK_SECRET={settings.webhook_secrets[0]} opentime events send --url {base}"
        f" --recipient {recipient_id(1)} --type profile.updated --payload '{payload}'"
    )
    click.echo("render the email an ESP would send (text, AMP and HTML parts with signed URLs):")
    click.echo(
        f"  opentime render --config {config} --campaign demo --recipient {recipient_id(1)} --format eml"
    )
    click.echo(f"health: {base}/healthz   readiness: {base}/readyz\n")
