"""amp-form submissions: ``POST /v1/{token}/form/{block}``.

The AMP CORS middleware runs first and rejects foreign senders before anything is read or stored (the
CSRF guard). Then, in order: the token (403), the block (404), the content type (415), the body size
(413), the fields (400), the store (503). Every answer is JSON with ``Cache-Control: private, no-store``:
amp-form renders ``submit-success`` for a 2xx and ``submit-error`` otherwise, and its templates can show
``message``, ``error`` and the per-field ``fields`` messages. Never a redirect, never a 500.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl

from starlette.datastructures import Headers
from starlette.formparsers import MultiPartException, MultiPartParser

from app.asgi import Receive, Scope
from app.campaigns import forms
from app.campaigns.loader import Campaign
from app.errors import OpentimeError
from app.open_time.kind import Open, Reply, Target
from app.open_time.reasons import Reason
from app.open_time.respond import Answer, json_answer
from app.security.tokens import Claims
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


class Rejected(OpentimeError):
    """A submission answered with a 4xx/5xx JSON error; nothing has been stored."""

    def __init__(self, status: int, error: str, outcome: str | None = None, **extra: Any) -> None:
        super().__init__(error)
        self.status = status
        self.reason = outcome or Reason.INVALID_SUBMISSION  # the metrics' outcome
        self.body = {"error": error, **extra}


class FormKind:
    """amp-form: refusals are 4xx JSON (amp-form shows ``submit-error``), never a fallback."""

    name = "form"

    def find(self, campaign: Campaign, block: str) -> forms.FormBlock | None:
        return campaign.forms.get(block)

    def answer(self, request: Open, block: forms.FormBlock | None, problem: Reason | None) -> Reply:
        return self._answer(request, block, problem)

    async def _answer(self, request: Open, block: forms.FormBlock | None, problem: Reason | None) -> Answer:
        try:
            reply = await submit(request, block, problem)
        except Rejected as exc:
            return json_answer(exc.status, exc.body, exc.reason)
        except Exception:
            # A 500 tells the reader nothing; "try again" is the honest answer for a fault on our side.
            logger.exception("form submission failed")
            return json_answer(503, {"error": TRY_AGAIN}, Reason.INTERNAL_ERROR)
        return json_answer(200, reply)


def parse(parts: list[str]) -> Target | None:
    return Target(parts[2], parts[4]) if len(parts) == 5 and parts[4] else None


async def submit(request: Open, block: forms.FormBlock | None, problem: Reason | None) -> dict[str, Any]:
    services = request.services
    campaign, recipient = _campaign_and_recipient(request.claims, problem)
    if block is None:
        raise Rejected(404, "unknown form", Reason.UNKNOWN_BLOCK)
    scope, receive = request.scope, request.receive
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


def _campaign_and_recipient(claims: Claims | None, problem: Reason | None) -> tuple[str, str]:
    if problem is Reason.INTERNAL_ERROR:
        raise Rejected(503, TRY_AGAIN, problem)
    if problem is Reason.TOKEN_EXPIRED:
        raise Rejected(403, "this form has expired", problem, reason=problem)
    if claims is None or problem is not None:
        reason = problem or Reason.TOKEN_INVALID
        raise Rejected(403, "this form link is not valid", reason, reason=reason)
    if claims.recipient is None:
        # A campaign-wide token names nobody: there is no one to attribute the answer to.
        no_one = Reason.NO_RECIPIENT
        raise Rejected(403, "this form needs a personal link", no_one, reason=no_one)
    return claims.campaign, claims.recipient


async def _save(services: Services, submission: Submission) -> Saved:
    try:
        return await services.store.forms.save(submission, services.clock())
    except StoreError:
        logger.warning("form submission not saved", exc_info=True)
        raise Rejected(503, TRY_AGAIN, Reason.STORE_ERROR) from None


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
