"""Operational endpoints: liveness and readiness."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from app.services import Services
from app.store.base import StoreError

NO_STORE = {"cache-control": "no-store"}


async def healthz(request: Request) -> JSONResponse:
    """The process is up and serving."""
    return JSONResponse({"status": "ok"}, headers=NO_STORE)


async def readyz(request: Request) -> JSONResponse:
    """The process can answer opens: its store answers and campaigns are loaded."""
    services: Services = request.state.services
    try:
        await services.store.ping()
    except StoreError as exc:
        return JSONResponse({"status": "unavailable", "reason": str(exc)}, 503, headers=NO_STORE)
    return JSONResponse({"status": "ready", "campaigns": sorted(services.campaigns)}, headers=NO_STORE)


routes = [
    Route("/healthz", healthz, methods=["GET", "HEAD"]),
    Route("/readyz", readyz, methods=["GET", "HEAD"]),
]
