"""``/api/customers/{id}``: privacy requests, behind API keys with their own scopes.

``DELETE /api/customers/{id}`` (scope ``customers:erase``) erases the customer: profile with its
field times, event ids, form answers, and every cached render on every node (``app.privacy.erasure``);
200 with the erasure record's id and what was removed, counts 0 for an id the store does not know
(erasing is idempotent). ``GET /api/customers/{id}/export`` (scope ``customers:export``) answers an
access request with everything stored about the customer (``app.privacy.export``); 200 with an
empty profile and lists for an unknown id. Both are ``Cache-Control: no-store``; an id the store
could never hold (empty, over 200 characters, control characters) is a 400. The id is in the path
as for the personalization API; ids with a ``/`` are erased with ``opentime erase``.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from app.errors import BadRequest
from app.privacy.export import export_json, iso, removed
from app.privacy.records import check_id
from app.routes.responses import json_response
from app.security.api_auth import require_scope
from app.security.apikeys import ERASE, EXPORT
from app.services import Services


async def erase(request: Request) -> Response:
    key = await require_scope(request, ERASE)
    services: Services = request.state.services
    record = await services.eraser.erase(_customer(request), key.key_id)
    return json_response(
        {
            "erased": True,
            "erasure_id": record.erasure_id,
            "erased_at": iso(record.erased_at),
            "removed": removed(record),
        }
    )


async def export(request: Request) -> Response:
    await require_scope(request, EXPORT)
    services: Services = request.state.services
    customer = _customer(request)
    data = await services.store.privacy.export(customer)
    erasures = await services.eraser.records(customer)
    return json_response(export_json(customer, data, erasures, services.clock()))


def _customer(request: Request) -> str:
    try:
        return check_id(request.path_params["customer"])
    except ValueError as exc:
        raise BadRequest(str(exc)) from None


routes = [
    Route("/api/customers/{customer}", erase, methods=["DELETE"]),
    Route("/api/customers/{customer}/export", export, methods=["GET"]),
]
