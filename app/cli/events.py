"""``opentime events send``: sign one event and post it to a server's ``/webhooks/events``.

Exit codes: 0 the server acknowledged the event (2xx), 1 it refused it (4xx/5xx), 2 a usage error or
the server could not be reached. Posts with ``urllib`` (httpx is the upstream client's).
"""

from __future__ import annotations

import sys
import time
import urllib.error
import urllib.request
import uuid
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import click
import orjson

from app.cli.common import fail
from app.ingest.events import RULES
from app.security.webhook_auth import HEADER, sign_header

WEBHOOK_PATH = "/webhooks/events"


def webhook_url(url: str) -> str:
    """A server's base URL or the full endpoint URL, as the endpoint URL."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        fail(f"--url must be an http(s) URL, got {url!r}")
    return url.rstrip("/") + WEBHOOK_PATH if parts.path in ("", "/") else url


def build_event(
    recipient: str, event_type: str, payload: Any, event_id: str | None, occurred_at: str | None
) -> dict[str, Any]:
    when = occurred_at or datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")
    return {
        "id": event_id or f"cli-{uuid.uuid4()}",
        "type": event_type,
        "recipient": recipient,
        "occurred_at": when,
        "payload": payload,
    }


def post_signed(url: str, secret: str, body: bytes, *, timeout: float = 10.0) -> tuple[int, bytes]:
    headers = {"content-type": "application/json", HEADER: sign_header([secret], int(time.time()), body)}
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")  # noqa: S310 - scheme checked
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


@click.group()
def events() -> None:
    """Send signed webhook events to a running server."""


@events.command("send")
@click.option("--url", required=True, help="Server base URL (or the full /webhooks/events URL).")
@click.option(
    "--secret",
    envvar="OPENTIME_WEBHOOK_SECRET",
    required=True,
    help="Signing secret (env OPENTIME_WEBHOOK_SECRET).",
)
@click.option("--recipient", required=True, help="Recipient id.")
@click.option(
    "--type", "event_type", required=True, help=f"Event type: {', '.join(sorted(RULES))} or a custom type."
)
@click.option("--payload", default="{}", show_default=True, help="Event payload, a JSON object.")
@click.option("--id", "event_id", help="Event id (default: a new random id; reuse one to test idempotency).")
@click.option("--occurred-at", help="RFC 3339 time of the event (default: now).")
@click.option("--timeout", default=10.0, show_default=True, help="Seconds to wait for the server.")
def send(
    url: str,
    secret: str,
    recipient: str,
    event_type: str,
    payload: str,
    event_id: str | None,
    occurred_at: str | None,
    timeout: float,
) -> None:
    """Sign one event and post it; prints the server's JSON answer."""
    try:
        data = orjson.loads(payload)
    except orjson.JSONDecodeError as exc:
        fail(f"--payload is not valid JSON: {exc}")
    body = orjson.dumps(build_event(recipient, event_type, data, event_id, occurred_at))
    try:
        status, answer = post_signed(webhook_url(url), secret, body, timeout=timeout)
    except (urllib.error.URLError, OSError) as exc:
        fail(f"cannot reach {url}: {exc}")
    click.echo(f"{status} {answer.decode('utf-8', 'replace')}")
    sys.exit(0 if 200 <= status < 300 else 1)
