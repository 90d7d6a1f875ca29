"""Operational endpoints: liveness, readiness and Prometheus metrics.

``/metrics`` is meant for the internal network (keep it off the CDN); with ``metrics_token`` set it
also wants ``Authorization: Bearer <metrics_token>``.
"""

from __future__ import annotations

import asyncio
import hmac
import logging

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from app.content.cache_policy import NO_STORE_HEADERS
from app.errors import Unauthorized
from app.metrics import CONTENT_TYPE, exposition
from app.security.audit import auth_failed
from app.services import Services
from app.store.base import StoreError

NO_STORE = NO_STORE_HEADERS

logger = logging.getLogger(__name__)


async def healthz(request: Request) -> JSONResponse:
    """The process is up and serving."""
    return JSONResponse({"status": "ok"}, headers=NO_STORE)


async def readyz(request: Request) -> JSONResponse:
    """The process can answer opens: its store answers and campaigns are loaded.

    With ``redis_url``, the body also says ``"redis": "up"`` or ``"down"``; readiness does not depend on
    it (Redis is an optimisation: without it, answers come from the local caches and the store).
    With ``ingest_url``, ``"ingest": {"state": "consuming" | "connecting" | "stopped", "queue": ...}``;
    readiness does not depend on it either: opens are answered from the store whether or not the broker
    is reachable, and the queue keeps the events until it is (a load balancer taking every node out
    during a broker outage would turn a delay in freshness into failed opens).
    """
    services: Services = request.state.services
    try:
        await services.store.profiles.ping()
    except StoreError:
        # No details: this endpoint is public, and the error names files and hosts. The reason is a
        # code: "store", or "store-deleted" / "store-replaced" / "store-corrupt" (the SQLite file).
        logger.warning("readiness check: the profile store does not answer", exc_info=True)
        problem = services.store.problem
        reason = "store" if problem is None else f"store-{problem}"
        return JSONResponse({"status": "unavailable", "reason": reason}, 503, headers=NO_STORE)
    body: dict[str, object] = {"status": "ready", "campaigns": sorted(services.campaigns)}
    if services.shared is not None:
        body["redis"] = "up" if await services.shared.check() else "down"
    if services.ingest is not None:
        body["ingest"] = services.ingest.report()
    return JSONResponse(body, headers=NO_STORE)


async def metrics(request: Request) -> Response:
    services: Services = request.state.services
    token = services.settings.metrics_token
    if token:
        scheme, _, presented = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(presented.strip().encode(), token.encode()):
            auth_failed(request.scope, "bad-metrics-token")
            raise Unauthorized("GET /metrics needs 'Authorization: Bearer <metrics_token>'")
    share = services.worker_share
    # The other workers' snapshot files are read in a thread: disk I/O stays off the event loop.
    others = None if share is None else await asyncio.to_thread(share.read_others)
    return Response(exposition(services, others), media_type=CONTENT_TYPE, headers=NO_STORE)


routes = [
    Route("/metrics", metrics, methods=["GET"]),
    Route("/healthz", healthz, methods=["GET", "HEAD"]),
    Route("/readyz", readyz, methods=["GET", "HEAD"]),
]
