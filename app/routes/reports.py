"""``GET /api/campaigns/{campaign}/report``: a campaign's report as JSON, behind an API key with the
``reports:read`` scope (``admin`` covers it).

The same document as ``opentime report --json`` (``app.reports.report.as_json``). ``since`` and
``until`` (query, ISO 8601, UTC unless an offset is given) select the hours that start in
[since, until); a malformed one is a 400, a campaign the server does not serve a 404. Exposures reach
the store within ``exposure_flush_seconds`` of the open (or click).
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from app.errors import BadRequest, NotFound
from app.reports.report import as_json, campaign_report, parse_time
from app.routes.responses import json_response
from app.security.api_auth import require_scope
from app.security.apikeys import REPORTS
from app.services import Services


async def report(request: Request) -> Response:
    await require_scope(request, REPORTS)
    services: Services = request.state.services
    campaign = request.path_params["campaign"]
    if campaign not in services.campaigns:
        raise NotFound(f"unknown campaign {campaign!r}")
    since, until = _time(request, "since"), _time(request, "until")
    built = await campaign_report(services.store.exposures, campaign, since, until)
    return json_response(as_json(built))


def _time(request: Request, name: str) -> float | None:
    text = request.query_params.get(name)
    if text is None:
        return None
    try:
        return parse_time(text)
    except ValueError as exc:
        raise BadRequest(f"{name}: {exc}") from None


routes = [Route("/api/campaigns/{campaign}/report", report, methods=["GET"])]
