"""``POST /v1/{token}/form/{block}``: amp-form submissions, as a plain ASGI callable.

The AMP CORS middleware runs first and rejects foreign senders before anything is read or stored (the
CSRF guard). Then, in order: the token (403), the block (404), the content type (415), the body size
(413), the fields (400), the store (503). Every answer is JSON with ``Cache-Control: private, no-store``:
amp-form renders ``submit-success`` for a 2xx and ``submit-error`` otherwise, and its templates can show
``message``, ``error`` and the per-field ``fields`` messages. Never a redirect, never a 500.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator, Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl

from starlette.datastructures import Headers
from starlette.formparsers import MultiPartException, MultiPartParser

from app.asgi import Receive, Scope, Send
from app.campaigns import forms
from app.open_time.kinds.list import send_json_object
from app.security.tokens import TokenError, TokenExpired
from app.store.base import Saved, StoreError, Submission

if TYPE_CHECKING:
    from app.services import Services

logger = logging.getLogger(__name__)

MAX_BODY_BYTES = 16 * 1024
MAX_FORM_FIELDS = 100
URLENCODED = "application/x-www-form-urlencoded"
MULTIPART = "multipart/form-data"
TRY_AGAIN = "your answer could not be saved, please try again"
Pairs = list[tuple[str, str]]


class Rejected(Exception):
    """A submission answered with a 4xx/5xx JSON error; nothing has been stored."""

    def __init__(self, status: int, error: str, **extra: Any) -> None:
        super().__init__(error)
        self.status = status
        self.body = {"error": error, **extra}


async def form_app(scope: Scope, receive: Receive, send: Send) -> None:
    """``/v1/{token}/form/{block}``; the AMP CORS middleware has already run."""
    parts = scope["path"].split("/")
    if len(parts) != 5 or not parts[4]:
        await send_reply(send, 404, {"error": "not a form URL: expected /v1/{token}/form/{block}"})
        return
    if scope["method"] != "POST":
        error = {"error": f"method {scope['method']} not allowed: use POST"}
        await send_reply(send, 405, error, [(b"allow", b"POST")])
        return
    try:
        status, body = 200, await submit(scope["state"]["services"], parts[2], parts[4], scope, receive)
    except Rejected as exc:
        status, body = exc.status, exc.body
    except Exception:
        # A 500 tells the reader nothing; "try again" is the honest answer for a fault on our side.
        logger.exception("form submission failed")
        status, body = 503, {"error": TRY_AGAIN}
    await send_reply(send, status, body)


async def submit(
    services: Services, token: str, block_name: str, scope: Scope, receive: Receive
) -> dict[str, Any]:
    campaign, recipient = _campaign_and_recipient(services, token)
    block = _form_block(services, campaign, block_name)
    try:
        values = forms.validate(block, await read_form(scope, receive))
    except forms.InvalidSubmission as exc:
        raise Rejected(400, "some answers are missing or invalid", fields=exc.errors) from None
    payload = forms.canonical_payload(values)
    submission = Submission(
        submission_id=forms.submission_id(campaign, block.name, recipient, payload),
        campaign=campaign,
        block=block.name,
        recipient_id=recipient,
        payload=payload,
        profile_updates=tuple(forms.profile_updates(block, values)),
    )
    saved = await _save(services, submission)
    if saved.profile_changed:
        await services.invalidation.recipients_changed((recipient,))
    return {"message": block.success_message, "duplicate": saved.duplicate, "submitted": values}


def _campaign_and_recipient(services: Services, token: str) -> tuple[str, str]:
    try:
        claims = services.verifier.verify(token, now=int(services.clock()))
    except TokenExpired as exc:
        raise Rejected(403, "this form has expired", reason=exc.reason) from None
    except TokenError as exc:
        raise Rejected(403, "this form link is not valid", reason=exc.reason) from None
    if claims.recipient is None:
        # A campaign-wide token names nobody: there is no one to attribute the answer to.
        raise Rejected(403, "this form needs a personal link", reason="no-recipient")
    return claims.campaign, claims.recipient


def _form_block(services: Services, campaign_name: str, block_name: str) -> forms.FormBlock:
    campaign = services.campaigns.get(campaign_name)
    block = None if campaign is None else campaign.forms.get(block_name)
    if block is None:
        raise Rejected(404, "unknown form")
    return block


async def _save(services: Services, submission: Submission) -> Saved:
    try:
        return await services.store.forms.save(submission, services.clock())
    except StoreError:
        logger.warning("form submission not saved", exc_info=True)
        raise Rejected(503, TRY_AGAIN) from None


# -- the body --------------------------------------------------------------------------------------


async def read_form(scope: Scope, receive: Receive) -> Pairs:
    """The submitted (name, value) pairs, urlencoded or multipart, at most ``MAX_BODY_BYTES``."""
    headers = Headers(scope=scope)
    media_type = headers.get("content-type", "").partition(";")[0].strip().lower()
    if media_type not in (URLENCODED, MULTIPART):
        raise Rejected(415, f"send the form as {URLENCODED} or {MULTIPART}")
    body = await _read_body(headers, receive)
    return _urlencoded(body) if media_type == URLENCODED else await _multipart(headers, body)


async def _read_body(headers: Headers, receive: Receive) -> bytes:
    too_large = Rejected(413, f"the form is larger than {MAX_BODY_BYTES} bytes")
    declared = headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise too_large
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise Rejected(400, "the form was not received completely")
        chunk: bytes = message.get("body", b"")
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise too_large
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def _urlencoded(body: bytes) -> Pairs:
    try:
        return parse_qsl(
            body.decode("ascii"), keep_blank_values=True, max_num_fields=MAX_FORM_FIELDS, errors="strict"
        )
    except ValueError:  # not ASCII, an escape that is not UTF-8, or too many fields
        raise Rejected(400, "the form body is not valid url-encoded UTF-8") from None


async def _multipart(headers: Headers, body: bytes) -> Pairs:
    async def stream() -> AsyncGenerator[bytes, None]:
        yield body

    # AMP email bans file inputs, so any file part is refused (max_files=0).
    parser = MultiPartParser(
        headers, stream(), max_files=0, max_fields=MAX_FORM_FIELDS, max_part_size=MAX_BODY_BYTES
    )
    try:
        form = await parser.parse()
    except MultiPartException as exc:
        raise Rejected(400, f"the multipart form is not valid: {exc.message}") from None
    return [(name, value) for name, value in form.multi_items() if isinstance(value, str)]


async def send_reply(
    send: Send, status: int, body: Mapping[str, Any], extra: list[tuple[bytes, bytes]] | None = None
) -> None:
    await send_json_object(send, status, body, extra or ())
