"""``opentime serve``: check everything a worker needs, then hand over to uvicorn.

Workers build their own app from the environment (``uvicorn --factory``), so a config file is
passed to them through ``OPENTIME_CONFIG``; checking keys and campaigns here first turns a bad
deployment into a clear message and exit code 2 instead of a crash loop of workers.

``--demo`` runs from a temporary folder (key ring, profile store, settings file) that is deleted when
the server stops, on Ctrl+C (SIGINT) and on SIGTERM alike. It reads settings as every other mode does
(``--config``/``OPENTIME_CONFIG``, ``OPENTIME_*``, flags) except the ones in ``DEMO_OWNED``, which it
sets itself and says so on stderr when one is given: they would point a throwaway run at a real
deployment's key ring, store or secrets. ``public_base_url`` defaults to the bound host and port. Its
preview API key is minted at start-up into that folder's store: a fresh random key per run, never a
built-in secret, gone with the folder. Workers read the demo's settings file only (its ``OPENTIME_*``
variables are removed), so what it resolved is what they serve.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import shlex
import signal
import tempfile
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import click
import orjson

from app.campaigns.loader import Campaign
from app.campaigns.urls import html_url, img_url, list_url, mint, sending_base_url, shared_token, view_url
from app.cli.common import config_option, fail, read_settings
from app.cli.preview import preview_url
from app.config import CONFIG_ENV, ENV_PREFIX, FIELDS, Settings, check_serving, load_setting, load_settings
from app.demo import DEMO_SENDER, demo_rows, recipient_id
from app.errors import CampaignError, ConfigError
from app.security.apikeys import create_key
from app.security.keyring import KeyRingError, load_keyring, new_keyring, save_keyring
from app.security.tokens import TokenSigner
from app.services import load_campaigns_for
from app.serving import run_uvicorn
from app.store import open_store
from app.store.base import StoreError
from app.worker_metrics import WORKER_METRICS_ENV

DEMO_RECIPIENTS = 1000
DEMO_CAMPAIGN = "demo"
PREVIEW_USER = "demo"  # the Basic auth user name in the printed preview link (any name is accepted)
# The settings the demo sets itself, whatever is given, and what it uses instead.
DEMO_OWNED = {
    "keys_file": "a throwaway key ring in its temporary folder",
    "database_url": "a SQLite store of synthetic recipients in its temporary folder",
    "allowed_senders": f"the demo sender {DEMO_SENDER}",
    "webhook_secrets": "a fresh random webhook secret",
}


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
        check_serving(settings)
        load_keyring(settings.keys_file)
        campaigns = load_campaigns_for(settings)
        asyncio.run(check_store(settings))
    except (ConfigError, KeyRingError, CampaignError, StoreError, ValueError) as exc:
        fail(str(exc))
    if not campaigns:
        click.echo(f"warning: no campaigns in {settings.templates_dir}", err=True)
    if config_file is not None:
        os.environ[CONFIG_ENV] = str(config_file.resolve())
    with worker_metrics_folder(settings.workers):
        run_uvicorn(settings)


async def check_store(settings: Settings) -> None:
    """The store opens as a worker will open it: a missing or empty one is refused here, with one clear
    message, unless ``create_database`` (then the first worker creates it)."""
    store = open_store(
        settings.database_url,
        create=settings.create_database,
        timeout_ms=settings.database_timeout_ms,
        pool_size=1,
    )
    await store.open()
    await store.close()


@contextmanager
def worker_metrics_folder(workers: int) -> Iterator[None]:
    """With several workers, a fresh folder for their metric snapshots (``app.worker_metrics``),
    named to them in the environment and removed when the server stops; with one, nothing."""
    if workers == 1:
        yield
        return
    with tempfile.TemporaryDirectory(prefix="opentime-metrics-") as folder:
        os.environ[WORKER_METRICS_ENV] = folder
        try:
            yield
        finally:
            del os.environ[WORKER_METRICS_ENV]


def run_demo(config_file: Path | None, overrides: dict[str, Any]) -> None:
    """Serve the demo campaign with throwaway keys and synthetic recipients from a temp folder."""
    with sigterm_as_ctrl_c(), tempfile.TemporaryDirectory(prefix="opentime-demo-") as tmp:
        folder = Path(tmp)
        settings = demo_settings(folder, config_file, overrides, os.environ)
        campaign = demo_campaign(settings)
        ring = new_keyring(datetime.now(UTC))
        save_keyring(ring, settings.keys_file, overwrite=False)
        preview_key = asyncio.run(load_demo_data(settings.database_url))
        config = write_toml(folder / "opentime.toml", settings)
        for name in [name for name in os.environ if name.startswith(ENV_PREFIX)]:
            del os.environ[name]  # an OPENTIME_* variable would win over the file in the workers
        DemoBanner(settings, campaign, TokenSigner(ring)).print(config, preview_key)
        run_server(settings, config)


def demo_campaign(settings: Settings) -> Campaign:
    try:
        campaigns = load_campaigns_for(settings)
    except CampaignError as exc:
        fail(str(exc))
    if DEMO_CAMPAIGN not in campaigns:
        fail(f"the demo needs the campaign {DEMO_CAMPAIGN!r}, which is not in {settings.templates_dir}")
    return campaigns[DEMO_CAMPAIGN]


@contextmanager
def sigterm_as_ctrl_c() -> Iterator[None]:
    """Make SIGTERM stop the demo exactly as Ctrl+C does, temporary folder removed.

    While it runs, uvicorn catches both signals, shuts down, restores the handlers it found and
    raises the signal again. For SIGINT that handler is Python's, a ``KeyboardInterrupt`` that
    unwinds through the folder's clean-up (and that ``uvicorn.run`` then swallows: exit code 0);
    for SIGTERM it would be the default one, which kills the process and leaves the keys behind.
    """
    previous = signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def demo_settings(
    folder: Path, config_file: Path | None, overrides: dict[str, Any], env: Mapping[str, str]
) -> Settings:
    """The settings given (file, ``env``, ``overrides``) with the ``DEMO_OWNED`` ones set to ``folder``'s."""
    owned: dict[str, Any] = {
        "keys_file": str(folder / "keys.json"),
        "database_url": f"sqlite:///{folder / 'demo.db'}",
        "allowed_senders": DEMO_SENDER,
        "webhook_secrets": secrets.token_urlsafe(24),
    }
    try:
        for name, instead in DEMO_OWNED.items():
            source = load_setting(name, env, config_file, needed=False, **overrides)[1]
            if source not in ("not set", "default"):
                click.echo(f"note: the demo ignores {name} ({source}); it uses {instead}", err=True)
        if load_setting("public_base_url", env, config_file, needed=False, **overrides)[0] is None:
            host = load_setting("host", env, config_file, **overrides)[0]
            port = load_setting("port", env, config_file, **overrides)[0]
            url_host = "127.0.0.1" if host in ("0.0.0.0", "::") else host  # noqa: S104 - only a display choice
            owned["public_base_url"] = f"http://{url_host}:{port}"
        return load_settings(env, config_file, **owned, **overrides).settings
    except ConfigError as exc:
        fail(str(exc))


async def load_demo_data(database_url: str) -> str:
    """Store the synthetic recipients and a fresh preview API key; returns the key (shown once)."""
    store = open_store(database_url)
    await store.open()
    try:
        await store.profiles.upsert_many(list(demo_rows(DEMO_RECIPIENTS)))
        _, key = await create_key(store.api_keys, "demo preview", ("preview",), time.time())
        return key
    finally:
        await store.close()


def write_toml(path: Path, settings: Settings) -> Path:
    """Write ``settings`` as a TOML file ``--config`` reads back to the same settings: every setting
    that differs from its default (required ones always), so nothing given is lost on the way."""
    lines = []
    for row in FIELDS:
        value = getattr(settings, row.name)
        if value is None or value == row.default:
            continue
        lines.append(f"{row.name} = {_toml_value(value)}")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, tuple):
        return "[" + ", ".join(_toml_value(item) for item in value) + "]"
    # A JSON string is a valid TOML basic string (same escapes).
    return orjson.dumps(str(value)).decode()


class DemoBanner:
    """What ``serve --demo`` prints: ready-to-run commands and links for the demo campaign."""

    def __init__(self, settings: Settings, campaign: Campaign, signer: TokenSigner) -> None:
        self.settings = settings
        self.campaign = campaign
        self.signer = signer
        self.base = settings.public_base_url
        self.now = int(datetime.now(UTC).timestamp())

    def print(self, config: Path, preview_key: str) -> None:
        click.echo(f"Opentime demo: {DEMO_RECIPIENTS} synthetic recipients, sender {DEMO_SENDER}")
        click.echo(
            f"keys and data in a temporary folder: {self.settings.keys_file.parent} (deleted on exit)\n"
        )
        for index in (1, 2):
            self.recipient_urls(index)
        self.countdown_urls()
        self.tampered_token()
        self.event()
        self.preview(config, preview_key)
        self.render(config)
        click.echo(f"health: {self.base}/healthz   readiness: {self.base}/readyz\n")

    def recipient_urls(self, index: int) -> None:
        base, campaign = self.base, self.campaign
        tokens = mint(self.signer, campaign, recipient_id(index), now=self.now)
        click.echo(f"recipient {recipient_id(index)}:")
        for name in campaign.lists:
            click.echo(f"  curl -H 'AMP-Email-Sender: {DEMO_SENDER}' {list_url(base, tokens.amp, name)}")
        for name in sorted(campaign.fragments):
            click.echo(f"  curl {html_url(base, tokens.html, name)}")
        for name in sorted(campaign.images):
            click.echo(f"  image (open in a browser): {img_url(base, tokens.html, name)}")
        click.echo(f"  web view (open in a browser): {view_url(base, tokens.html)}")

    def countdown_urls(self) -> None:
        shared = shared_token(self.signer, self.campaign, now=self.now)
        shared = shared or self.signer.sign_shared(self.campaign.name, now=self.now)
        click.echo("campaign-wide countdown (no recipient in the URL: one render a minute serves everyone):")
        for name in sorted(self.campaign.countdowns):
            click.echo(f"  countdown (open in a browser): {img_url(self.base, shared, name, ext='gif')}")

    def tampered_token(self) -> None:
        bad = self.signer.sign(self.campaign.name, recipient_id(1), now=self.now)[:-3] + "AAA"
        click.echo("a tampered token (the block's static fallback items; X-Opentime-Fallback says why):")
        click.echo(f"  curl -i -H 'AMP-Email-Sender: {DEMO_SENDER}' {list_url(self.base, bad, 'picks')}")

    def event(self) -> None:
        click.echo(f"send a signed event; the next open of {recipient_id(1)} shows the new name:")
        payload = '{"first_name": "Zoe"}'
        click.echo(
            f"  OPENTIME_WEBHOOK_SECRET={self.settings.webhook_secrets[0]} opentime events send"
            f" --url {self.base} --recipient {recipient_id(1)} --type profile.updated --payload '{payload}'"
        )

    def preview(self, config: Path, key: str) -> None:
        page = preview_url(self.base, self.campaign.name, recipient_id(1), None)
        click.echo(
            "preview what a recipient gets (HTML version, list blocks, the AMP validator's verdict);"
            " the link carries this run's preview API key (deleted on exit):"
        )
        click.echo(f"  open in a browser: {with_credentials(page, PREVIEW_USER, key)}")
        click.echo(f"  or open {page} and give the key as the password (any user name): {key}")
        click.echo(
            f"  in the terminal: opentime preview --config {quoted(config)} --campaign {self.campaign.name}"
            f" --recipient {recipient_id(1)}"
        )

    def render(self, config: Path) -> None:
        sent = sending_base_url(self.base)
        click.echo(
            "render the email an ESP would send and check it with the official AMP validator (AMP email"
            f" clients fetch only https, so the email's URLs use the placeholder {sent} where your"
            " CDN's host goes):"
        )
        command = (
            f"opentime render --config {quoted(config)} --base-url {sent} --campaign {self.campaign.name}"
            f" --recipient {recipient_id(1)}"
        )
        click.echo(f"  {command} --format eml > demo.eml")
        click.echo(f"  {command} --format parts --out demo-email")
        click.echo("  opentime validate demo-email/email.amp.html")


def with_credentials(url: str, user: str, password: str) -> str:
    """``url`` with ``user:password@`` before its host: browsers send it as HTTP Basic auth."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(netloc=f"{user}:{password}@{parts.netloc}"))


def quoted(path: Path) -> str:
    return shlex.quote(str(path))
