"""``/api/...``: JSON endpoints for systems (ESPs, apps), behind API keys with scopes.

``POST /api/render`` (scope ``render``) renders a campaign for a batch of recipients at send time:
the three parts with each recipient's signed URLs, as JSON, or as ``.eml`` text. Addresses (``from``,
each ``to``) are checked before anything renders (``app.render.addresses``): an invalid one is a 400
naming the field. An ``.eml`` needs a From (the request's, else the campaign's): without one the request
is a 400; the ``parts`` format only warns.

``GET /api/customers/{id}/personalization`` (scope ``personalization:read``, optional ``?campaign=``)
returns what the templates see for that customer, per campaign and list block (``block_data``: items
and ``live``), with the profile's source, version, ``updated_at`` and data age. The profile comes from
the store, then the upstream (if configured), like an open; 404 when neither knows the customer.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from app.campaigns.loader import Campaign
from app.campaigns.sendtime import block_data
from app.content.lists import UNKNOWN, Found
from app.errors import (
    BadRequest,
    CampaignError,
    NotFound,
    PayloadTooLarge,
    RequestTimeout,
    Unprocessable,
    UnsupportedMediaType,
)
from app.open_time.reasons import Reason
from app.render.addresses import AddressError, Mailbox, parse_mailbox
from app.render.email import (
    EmailLimitError,
    EmailParts,
    address_warnings,
    missing_sender,
    parts_json,
    to_message,
)
from app.render.templates import TemplateError
from app.routes.responses import BodyTimeout, json_response, read_limited
from app.security.api_auth import require_scope
from app.security.tokens import check_recipient
from app.services import Services

MAX_BODY_BYTES = 1024 * 1024
MAX_RECIPIENTS = 500
FORMATS = ("parts", "eml")
# An API caller can wait longer than an open, but not forever: the upstream's own deadline is shorter.
LOOKUP_BUDGET_S = 10.0
UNREADABLE_PROFILE = "stored profile is unreadable: rendered without customer data"


@dataclass(frozen=True, slots=True)
class RenderRequest:
    campaign: str
    recipients: list[tuple[str, Mailbox | None]]  # (recipient id, To)
    fmt: str
    sender: Mailbox | None


async def render(request: Request) -> Response:
    await require_scope(request, "render")
    wanted = parse_render_request(await read_json(request))
    services: Services = request.state.services
    try:
        campaign = services.sendtime.campaign(wanted.campaign)
    except CampaignError as exc:
        raise NotFound(str(exc)) from None
    sender = wanted.sender or campaign.sender
    if sender is None and wanted.fmt == "eml":
        raise BadRequest(f'from: {missing_sender(campaign.name)}: send "from"')
    profiles = await services.store.profiles.get_many([r for r, _ in wanted.recipients])
    attributes = {rid: _decode_profile(p.attributes) for rid, p in profiles.items()}
    # Jinja is CPU work: keep the event loop free for open-time requests while a batch renders.
    batch = Batch(campaign.name, wanted.fmt, sender, attributes)
    results = await run_in_threadpool(render_batch, services, batch, wanted.recipients)
    return json_response({"campaign": campaign.name, "format": wanted.fmt, "results": results})


@dataclass(frozen=True, slots=True)
class Batch:
    campaign: str
    fmt: str
    sender: Mailbox | None
    attributes: dict[str, dict[str, Any] | None]


def _decode_profile(raw: bytes) -> dict[str, Any] | None:
    """The stored attributes, or None when they are corrupt (not JSON, or not an object)."""
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    return data if isinstance(data, dict) else None


def render_batch(
    services: Services, batch: Batch, recipients: list[tuple[str, Mailbox | None]]
) -> list[dict[str, Any]]:
    """One result per recipient; a recipient that fails gets an ``error`` without failing the batch."""
    results = []
    for recipient, to in recipients:
        data = batch.attributes.get(recipient)
        try:
            parts = services.sendtime.render(batch.campaign, recipient, data)
        except EmailLimitError as exc:
            results.append({"recipient": recipient, "error": str(exc), "problems": exc.problems})
            continue
        except TemplateError as exc:
            raise Unprocessable(f"template error: {exc}") from None
        item = parts_json(recipient, parts)
        item["found"] = data is not None
        if recipient in batch.attributes and data is None:
            item["warnings"].append(UNREADABLE_PROFILE)
        if batch.sender is None:
            item["warnings"].append(f'{missing_sender(batch.campaign)}; "format": "eml" needs one')
        elif batch.fmt == "eml":
            item = _eml_item(item, parts, batch.sender, to, services.clock())
        results.append(item)
    return results


def _eml_item(
    item: dict[str, Any], parts: EmailParts, sender: Mailbox, to: Mailbox | None, now: float
) -> dict[str, Any]:
    eml = bytes(to_message(parts, sender=sender, to=to, now=now)).decode("ascii")
    warnings = [*item["warnings"], *address_warnings(sender, to)]
    return {"recipient": item["recipient"], "eml": eml, "warnings": warnings}


async def read_json(request: Request) -> Any:
    if request.headers.get("content-type", "").split(";")[0].strip() != "application/json":
        raise UnsupportedMediaType("send a JSON body with Content-Type: application/json")
    services: Services = request.state.services
    within = services.settings.request_read_timeout_seconds
    try:
        body = await read_limited(request, MAX_BODY_BYTES, within)
    except BodyTimeout:
        raise RequestTimeout(f"the body was not received within {within:g} s") from None
    if body is None:
        raise PayloadTooLarge(f"body larger than {MAX_BODY_BYTES} bytes")
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"body is not valid JSON: {exc}") from None


def parse_render_request(payload: Any) -> RenderRequest:
    """Validate ``{"campaign", "recipients": [id | {"id", "to"}], "format"?, "from"?}``."""
    if not isinstance(payload, dict):
        raise BadRequest("body must be a JSON object")
    unknown = sorted(set(payload) - {"campaign", "recipients", "format", "from"})
    if unknown:
        raise BadRequest(f"unknown field(s): {', '.join(unknown)}")
    campaign = payload.get("campaign")
    if not isinstance(campaign, str) or not campaign:
        raise BadRequest("campaign: a campaign name is required")
    fmt = payload.get("format", "parts")
    if fmt not in FORMATS:
        raise BadRequest(f"format: must be one of {', '.join(FORMATS)}")
    sender = payload.get("from")
    if sender is not None and not isinstance(sender, str):
        raise BadRequest('from: must be a string such as "Shop <news@example.com>"')
    return RenderRequest(
        campaign,
        parse_recipients(payload.get("recipients")),
        fmt,
        None if sender is None else _mailbox(sender, "from"),
    )


def parse_recipients(value: Any) -> list[tuple[str, Mailbox | None]]:
    if not isinstance(value, list) or not value:
        raise BadRequest("recipients: a non-empty list of recipient ids is required")
    if len(value) > MAX_RECIPIENTS:
        raise BadRequest(f"recipients: at most {MAX_RECIPIENTS} per request, got {len(value)}")
    parsed = []
    for index, item in enumerate(value):
        rid, to = (item, None) if isinstance(item, str) else _recipient_object(item, index)
        try:
            check_recipient(rid)
        except ValueError as exc:
            raise BadRequest(f"recipients[{index}]: {exc}") from None
        parsed.append((rid, None if to is None else _mailbox(to, f"recipients[{index}].to")))
    return parsed


def _mailbox(value: str, where: str) -> Mailbox:
    try:
        return parse_mailbox(value)
    except AddressError as exc:
        raise BadRequest(f"{where}: {exc}") from None


def _recipient_object(item: Any, index: int) -> tuple[str, str | None]:
    if not isinstance(item, dict) or not isinstance(item.get("id"), str):
        raise BadRequest(f'recipients[{index}]: expected an id or {{"id": ..., "to": ...}}')
    # Refused rather than ignored: a misspelt "To" would otherwise send an email with no To.
    unknown = sorted(set(item) - {"id", "to"})
    if unknown:
        raise BadRequest(f"recipients[{index}]: unknown field(s): {', '.join(unknown)}")
    to = item.get("to")
    if to is not None and not isinstance(to, str):
        raise BadRequest(f"recipients[{index}].to: must be a string")
    return item["id"], to


async def personalization(request: Request) -> Response:
    await require_scope(request, "personalization:read")
    services: Services = request.state.services
    customer = request.path_params["customer"]
    try:
        # An id no token can carry is not looked up: no store read or upstream call for it.
        check_recipient(customer)
    except ValueError as exc:
        raise BadRequest(f"customer: {exc}") from None
    wanted = request.query_params.get("campaign")
    if wanted is not None and wanted not in services.campaigns:
        raise NotFound(f"unknown campaign {wanted!r}")
    found = await services.lists.find(customer, LOOKUP_BUDGET_S)
    if isinstance(found, str):
        return _lookup_failed(customer, found)
    names = [wanted] if wanted is not None else sorted(services.campaigns)
    campaigns = {name: _blocks(services.campaigns[name], found) for name in names}
    return json_response(_personalization(customer, found, services.clock(), campaigns))


def _blocks(campaign: Campaign, found: Found) -> dict[str, Any]:
    return {name: block_data(block, found.attributes) for name, block in campaign.lists.items()}


def _personalization(
    customer: str, found: Found, now: float, campaigns: dict[str, dict[str, Any]]
) -> dict[str, Any]:
    return {
        "customer": customer,
        "source": found.source,
        "version": found.version,
        "updated_at": datetime.fromtimestamp(found.updated_at, UTC).isoformat().replace("+00:00", "Z"),
        "data_age_seconds": round(max(now - found.updated_at, 0.0), 3),
        "campaigns": {name: {"blocks": blocks} for name, blocks in campaigns.items()},
    }


def _lookup_failed(customer: str, reason: str) -> Response:
    if reason == UNKNOWN:
        raise NotFound(f"unknown customer {customer!r}")
    if reason == Reason.BAD_PROFILE:
        raise Unprocessable(f"the profile of {customer!r} is not a JSON object")
    # The store or the upstream failed or was too slow: worth retrying later.
    body = {"error": f"customer data unavailable ({reason}), try again", "reason": reason}
    response = json_response(body, 503)
    response.headers["retry-after"] = "5"
    return response


routes = [
    Route("/api/render", render, methods=["POST"]),
    Route("/api/customers/{customer}/personalization", personalization, methods=["GET"]),
]
