"""``POST /webhooks/events``: signed customer-data events, acknowledged only once committed.

Checks, in order: webhooks configured (503), ``Content-Type: application/json`` (415), declared
body size (413, from Content-Length), signature header and timestamp (401): all before a byte of the
body is read, and answered with ``Connection: close`` so the body is never read. Then the body,
if fewer than ``webhook_concurrent_bodies`` are being read (else 503), within
``request_read_timeout_seconds`` (408) and the size cap (413), the signature against it and
replay (401), the sender's rate limit (429 with ``Retry-After``, per secret), JSON (400), each event
(reported per index and field). Valid events are committed through the group-committing
``EventWriter``, then the recipients' cached outputs are dropped. Each 401 writes one audit line
(``app.security.audit``).

Answers: 200 when every event was applied or was a duplicate, 207 when some were rejected (the body
says which), 400 when none was valid, 503 when the store could not commit (nothing acknowledged:
retry, ids make it safe).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from app.errors import OpentimeError
from app.ingest.events import BatchError, Event, EventError, parse_batch
from app.ingest.values import loads
from app.ingest.writer import statuses_json
from app.routes.responses import (
    BodyTimeout,
    closing_json_response,
    declared_too_large,
    json_response,
    read_limited,
)
from app.security.audit import auth_failed
from app.security.webhook_auth import HEADER, SignatureError, SignedHeader, Verified, check_body, check_header
from app.services import Services
from app.store.base import EventStatus, StoreError

logger = logging.getLogger(__name__)


class Refused(OpentimeError):
    """An event batch answered with a 4xx/5xx JSON error; nothing was stored.

    ``close``: refused before the body was read, so the connection is closed after the answer."""

    def __init__(self, status: int, error: str, *, close: bool = False, **extra: Any) -> None:
        super().__init__(error)
        self.status = status
        self.close = close
        self.body = {"error": error, **extra}


async def receive_events(request: Request) -> Response:
    services: Services = request.state.services
    try:
        return await _receive(request, services)
    except Refused as exc:
        return (closing_json_response if exc.close else json_response)(exc.body, exc.status)


async def _receive(request: Request, services: Services) -> Response:
    settings = services.settings
    if not settings.webhook_secrets:
        raise Refused(503, "webhooks are disabled: set webhook_secrets to enable them", close=True)
    if request.headers.get("content-type", "").partition(";")[0].strip().lower() != "application/json":
        raise Refused(415, "send the events with Content-Type: application/json", close=True)
    if declared_too_large(request, settings.webhook_max_body_bytes):
        raise Refused(413, _too_large(settings.webhook_max_body_bytes), close=True)
    # Header and timestamp first: a request that cannot be authentic costs no body read (an
    # unauthenticated client must not make the server hold its body in memory).
    signed = _signed_header(request, services)
    if services.webhook_bodies.locked():
        raise Refused(503, "too many webhook bodies are being received at once: retry", close=True)
    async with services.webhook_bodies:
        body = await read_body(
            request, settings.webhook_max_body_bytes, settings.request_read_timeout_seconds
        )
    verified = await _authenticate(request, services, signed, body)
    try:
        # After the signature: unsigned junk cannot spend a sender's budget. Within the try: a 429
        # is not acknowledged, so the replay guard forgets the request and the sender may retry it.
        await services.limits.admit("webhooks", verified.sender)
        return await _ingest(services, body)
    except BaseException:
        # Not acknowledged: the same request may be retried. Shielded: a client that went away must
        # not leave the request remembered on every node.
        await asyncio.shield(services.replay_guard.release(verified))
        raise


def _signed_header(request: Request, services: Services) -> SignedHeader:
    try:
        return check_header(
            request.headers.get(HEADER),
            now=services.clock(),
            tolerance=services.settings.webhook_tolerance_seconds,
        )
    except SignatureError as exc:
        auth_failed(request.scope, exc.reason)
        raise Refused(401, str(exc), close=True, reason=exc.reason) from None


async def _authenticate(request: Request, services: Services, signed: SignedHeader, body: bytes) -> Verified:
    try:
        verified = check_body(signed, body, services.settings.webhook_secrets)
        await services.replay_guard.admit(verified, services.clock())
    except SignatureError as exc:
        auth_failed(request.scope, exc.reason)
        raise Refused(401, str(exc), reason=exc.reason) from None
    return verified


async def _ingest(services: Services, body: bytes) -> Response:
    try:
        events, errors = parse_batch(loads(body), now=services.clock(), rules=services.event_rules)
    except orjson.JSONDecodeError as exc:
        raise Refused(400, f"body is not valid JSON: {exc}") from None
    except BatchError as exc:
        raise Refused(400, str(exc)) from None
    if not events:
        raise Refused(400, "no valid event in the request", errors=[e.as_json() for e in errors])
    try:
        statuses = await services.events.write([event for _, event in events])
    except StoreError:
        logger.warning("webhook events not saved", exc_info=True)
        raise Refused(503, "events could not be saved, nothing was applied: retry") from None
    errors += _unapplied(events, statuses)
    results = statuses_json(events, statuses)
    results += [{"index": i, "status": "rejected"} for i in sorted({e.index for e in errors})]
    results = [r for r in results if r["status"] not in _UNAPPLIED]
    results.sort(key=lambda r: int(r["index"]))
    body_out = {
        "applied": statuses.count("applied"),
        "duplicates": statuses.count("duplicate"),
        "rejected": len({e.index for e in errors}),
        "results": results,
        "errors": sorted((e.as_json() for e in errors), key=lambda e: int(e["index"])),
    }
    return json_response(body_out, 207 if errors else 200)


_UNAPPLIED: dict[str, tuple[str, str]] = {  # status -> (field, error)
    "unreadable-profile": ("recipient", "the stored profile is not a JSON object; event not applied"),
    "failed": ("event", "could not be applied to the profile; nothing was changed or recorded"),
}


def _unapplied(events: list[tuple[int, Event]], statuses: list[EventStatus]) -> list[EventError]:
    return [
        EventError(index, *_UNAPPLIED[status], event.id)
        for (index, event), status in zip(events, statuses, strict=True)
        if status in _UNAPPLIED
    ]


async def read_body(request: Request, limit: int, within: float) -> bytes:
    try:
        body = await read_limited(request, limit, within)
    except BodyTimeout:
        raise Refused(408, f"the body was not received within {within:g} s", close=True) from None
    if body is None:
        raise Refused(413, _too_large(limit), close=True)
    return body


def _too_large(limit: int) -> str:
    return f"body larger than {limit} bytes; send smaller batches"


routes = [Route("/webhooks/events", receive_events, methods=["POST"])]
