"""``opentime cdn key`` and ``cdn purge``: the surrogate keys Opentime tags images with, and purging them.

Per-recipient images carry ``Surrogate-Key: r-<keyed hash of the recipient> c-<campaign>``
(``app.content.cache_policy``); the CDN keeps them at most 30 s. To evict sooner (a correction that
must show at the next open), purge the recipient's or the campaign's key. ``purge`` sends the
``BAN`` that deploy/varnish/default.vcl accepts, with ``urllib`` (httpx is the upstream client's).

Exit codes: 0 done, 1 the CDN refused a purge, 2 a usage error or the CDN could not be reached.
"""

from __future__ import annotations

import sys
import urllib.error
import urllib.request
from collections.abc import Iterable
from pathlib import Path
from urllib.parse import urlsplit

import click

from app.campaigns.loader import CAMPAIGN_NAME
from app.cli.common import config_option, fail, keys_option, keys_path, read_ring
from app.content.cache_policy import CachePolicy, campaign_key
from app.security.keyring import KeyRing

TOKEN_HEADER = "Purge-Token"  # noqa: S105 - a header name, not a secret
KEY_HEADER = "Surrogate-Key"

recipients_argument = click.argument("recipients", nargs=-1)
campaign_option = click.option("--campaign", help="A campaign's key (c-<campaign>) instead of recipients'.")
all_keys_option = click.option(
    "--all-keys",
    is_flag=True,
    help="A recipient's key under every key of the ring (after a rotation, older copies carry the old one).",
)


@click.group()
def cdn() -> None:
    """Surrogate keys of the CDN in front of Opentime, and purging by them."""


@cdn.command("key")
@config_option
@keys_option
@campaign_option
@all_keys_option
@recipients_argument
def key(
    config: Path | None,
    keys_file: Path | None,
    campaign: str | None,
    all_keys: bool,
    recipients: tuple[str, ...],
) -> None:
    """Print the surrogate key of each RECIPIENT (none given: one id a line on stdin), one a line."""
    for surrogate in surrogate_keys(config, keys_file, campaign, all_keys, recipients):
        click.echo(surrogate)


@cdn.command("purge")
@config_option
@keys_option
@click.option("--url", required=True, help="The CDN's base URL (deploy/varnish/default.vcl answers BAN).")
@click.option(
    "--token", envvar="VARNISH_PURGE_TOKEN", required=True, help="Purge token (env VARNISH_PURGE_TOKEN)."
)
@campaign_option
@all_keys_option
@click.option("--timeout", default=10.0, show_default=True, help="Seconds to wait for the CDN.")
@recipients_argument
def purge(
    config: Path | None,
    keys_file: Path | None,
    url: str,
    token: str,
    campaign: str | None,
    all_keys: bool,
    timeout: float,
    recipients: tuple[str, ...],
) -> None:
    """Evict every CDN copy of each RECIPIENT's images (or of a campaign's, with --campaign)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        fail(f"--url must be an http(s) URL, got {url!r}")
    refused = 0
    for surrogate in surrogate_keys(config, keys_file, campaign, all_keys, recipients):
        try:
            status, answer = send_ban(url, token, surrogate, timeout)
        except (urllib.error.URLError, OSError) as exc:
            fail(f"cannot reach {url}: {exc}")
        click.echo(f"{surrogate}: {status} {answer.strip()}")
        refused += status != 200
    sys.exit(1 if refused else 0)


def surrogate_keys(
    config: Path | None,
    keys_file: Path | None,
    campaign: str | None,
    all_keys: bool,
    recipients: Iterable[str],
) -> Iterable[str]:
    if campaign is not None:
        if recipients:
            fail("give recipients or --campaign, not both")
        if not CAMPAIGN_NAME.fullmatch(campaign):
            fail(f"--campaign must match {CAMPAIGN_NAME.pattern}")
        return [campaign_key(campaign)]
    policies = _policies(read_ring(keys_path(config, keys_file)), all_keys)
    ids = recipients or (line.strip() for line in sys.stdin if line.strip())
    return (policy.surrogate_key(recipient) for recipient in ids for policy in policies)


def _policies(ring: KeyRing, all_keys: bool) -> list[CachePolicy]:
    if not all_keys:
        return [CachePolicy.for_ring(ring)]
    return [CachePolicy(key.secret) for key in ring]


def send_ban(url: str, token: str, surrogate: str, timeout: float) -> tuple[int, str]:
    headers = {TOKEN_HEADER: token, KEY_HEADER: surrogate}
    request = urllib.request.Request(url.rstrip("/") + "/", headers=headers, method="BAN")  # noqa: S310
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 - scheme checked
            return response.status, response.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode("utf-8", "replace")
