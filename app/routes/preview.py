"""The campaign preview for marketers: ``GET /preview`` and ``GET /preview/{campaign}``.

Guarded by an API key with the ``preview`` scope, sent as a Bearer token, ``X-API-Key`` or, since a
person opens these pages in a browser, as the HTTP Basic password. The page shows customer data, so
everything is escaped and the answer is never cached nor framed. The email's HTML version is shown
in an ``<iframe srcdoc>`` sandboxed without scripts; such an iframe inherits this page's CSP, which
is why the policy allows inline styles and the email's images but no script at all. The email's
images are https URLs (CDNs), ``data:`` URIs and this server's own open-time images (banners,
countdowns) under ``public_base_url``, which is plain http on localhost: the policy names that
origin and the page's own (``'self'``), not every http URL.

The AMP validator checks the AMP part as it would be sent (``app.campaigns.preview``): with a
placeholder https origin when ``public_base_url`` is http, and the page says which origin it used.

The AMP validator is located on first use and kept on ``request.app.state.amp_validator``; tests
may put their own there.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse
from starlette.routing import Route

from app.campaigns.loader import Campaign
from app.campaigns.preview import (
    CLIENTS,
    Report,
    Verdict,
    build_report,
    parse_at,
    profile_attributes,
    validate,
)
from app.campaigns.validator import AmpValidator, locate
from app.config import PROJECT_ROOT
from app.content.cache_policy import NO_STORE_HEADERS
from app.errors import BadRequest, NotFound
from app.render.templates import render_page
from app.security.api_auth import require_scope
from app.services import Services

SCOPE = "preview"
PAGE_HEADERS = {
    **NO_STORE_HEADERS,
    "x-frame-options": "DENY",
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",  # the URL names a recipient
}


def content_security_policy(public_base_url: str) -> str:
    """No script at all; images from https, ``data:``, this page's origin and ``public_base_url``'s."""
    parts = urlsplit(public_base_url)
    images = f"'self' {parts.scheme}://{parts.netloc} https: data:"
    return (
        f"default-src 'none'; style-src 'unsafe-inline'; img-src {images}; "
        "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    )


async def preview_index(request: Request) -> HTMLResponse:
    """Every campaign, linked to its preview."""
    key = await require_scope(request, SCOPE, basic=True)
    services: Services = request.state.services
    campaigns = sorted(services.campaigns.values(), key=lambda campaign: campaign.name)
    return page(services, "preview_index.html", {"campaigns": campaigns, "key_id": key.key_id})


async def preview_campaign(request: Request) -> HTMLResponse:
    """One campaign for one recipient at a simulated open time (``?recipient=...&at=...``)."""
    key = await require_scope(request, SCOPE, basic=True)
    services: Services = request.state.services
    campaign = find_campaign(services, request.path_params["campaign"])
    try:
        at = parse_at(request.query_params.get("at"), services.clock())
    except ValueError as exc:
        raise BadRequest(str(exc)) from None
    recipient = request.query_params.get("recipient", "").strip()
    if not recipient:
        return page(services, "preview.html", {**form_context(campaign, "", at), "key_id": key.key_id})
    client = request.query_params.get("client", "direct")
    if client not in CLIENTS:
        raise BadRequest(f"client must be one of {', '.join(CLIENTS)}")
    report = await make_report(services, campaign, recipient, at, client)
    verdict = await run_in_threadpool(validate, amp_validator(request), report.sent_amp)
    return page(services, "preview.html", {**report_context(report, verdict), "key_id": key.key_id})


def find_campaign(services: Services, name: str) -> Campaign:
    campaign = services.campaigns.get(name)
    if campaign is None:
        raise NotFound(f"unknown campaign {name!r}")
    if not campaign.has_email:
        raise NotFound(f"campaign {name!r} has no email templates to preview")
    return campaign


async def make_report(
    services: Services, campaign: Campaign, recipient: str, at: datetime, client: str = "direct"
) -> Report:
    try:
        profile = await services.store.profiles.get(recipient)
        attributes, reason = profile_attributes(profile)
        return build_report(services.sendtime, campaign, recipient, attributes, reason, at=at, client=client)
    except ValueError as exc:  # an id no token can carry (control characters, too long)
        raise BadRequest(f"bad recipient: {exc}") from None


def amp_validator(request: Request) -> AmpValidator | None:
    state = request.app.state
    validator: AmpValidator | None = getattr(state, "amp_validator", None)
    if validator is None:
        validator = state.amp_validator = locate(PROJECT_ROOT)
    return validator


def form_context(campaign: Campaign, recipient: str, at: datetime, client: str = "direct") -> dict[str, Any]:
    return {
        "campaign": campaign,
        "recipient": recipient,
        "client": client,
        "clients": tuple(CLIENTS),
        "at_value": at.strftime("%Y-%m-%dT%H:%M:%S"),
        "at_label": at.strftime("%Y-%m-%d %H:%M:%S UTC"),
        "report": None,
    }


def report_context(report: Report, verdict: Verdict) -> dict[str, Any]:
    amp_lines = report.sent_amp.splitlines() if report.sent_amp else []  # the lines the validator saw
    return {
        **form_context(report.campaign, report.recipient, report.at, report.client),
        "report": report,
        "parts": report.parts,
        "part_rows": report.part_rows(),
        "verdict": verdict,
        "amp_lines": amp_lines,
        "error_lines": {error.line for error in verdict.errors},
    }


def page(services: Services, template: str, context: dict[str, Any]) -> HTMLResponse:
    csp = content_security_policy(services.settings.public_base_url)
    headers = {**PAGE_HEADERS, "content-security-policy": csp}
    return HTMLResponse(render_page(template, context), headers=headers)


routes = [
    Route("/preview", preview_index, methods=["GET"]),
    Route("/preview/{campaign}", preview_campaign, methods=["GET"]),
]
