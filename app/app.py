"""``create_app(settings)``: the ASGI application.

Run it with ``opentime serve`` or ``uvicorn app.app:serve_app --factory`` (settings then come from
the environment; ``serve_app`` also tunes the garbage collector, see ``app.gc_policy``). Open-time
URLs (``/v1/...``) bypass Starlette's routing and middleware stack, since they carry almost all the
traffic: each route of ``app.open_time.routes`` is served by the one open-time pipeline
(``app.open_time.pipeline``), which runs the AMP CORS check itself where the route needs it.
Everything else (APIs, webhooks, preview, health, metrics) is a Starlette app.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from app import logs
from app.asgi import Receive, Scope, Send
from app.config import Settings, load_settings
from app.content.cache_policy import NO_STORE_HEADERS
from app.errors import HTTPError
from app.gc_policy import tune_for_serving
from app.limits.http import rate_limited
from app.limits.limiter import RateLimited
from app.methods import allow_header, path_methods
from app.metrics import published
from app.open_time.pipeline import OpenTimeEndpoint, not_found
from app.open_time.routes import ROUTES
from app.routes import api, assets, openapi, ops, preview, privacy, reports, webhooks
from app.security.amp_cors import SenderPolicy
from app.services import running_services
from app.store.base import StoreError
from app.worker_metrics import folder_from_env

logger = logging.getLogger(__name__)


class OpentimeApp:
    """Routes ``/v1/{token}/{kind}/...`` straight to its open-time handler; the rest to Starlette."""

    def __init__(
        self, starlette: Starlette, open_time: dict[str, OpenTimeEndpoint], *, access_log: bool = False
    ) -> None:
        self.starlette = starlette
        self._open_time = open_time
        self._access_log = access_log

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"].startswith("/v1/"):
            if self._access_log:  # else only a line the pipeline logs makes the open's id (app.logs)
                logs.enter(scope)
            parts = scope["path"].split("/")  # split once: the endpoint reads its URL from these
            endpoint = self._open_time.get(parts[3]) if len(parts) > 3 else None
            if endpoint is None:
                await not_found(scope, receive, send)
            else:
                await endpoint.serve(scope, receive, send, parts)
            return
        await self.starlette(scope, receive, send)


def serve_app() -> OpentimeApp:
    """The factory ``opentime serve`` gives uvicorn (called once in each worker process)."""
    tune_for_serving()
    return create_app(worker_metrics_dir=folder_from_env(os.environ))


def create_app(
    settings: Settings | None = None,
    *,
    clock: Callable[[], float] = time.time,
    worker_metrics_dir: Path | None = None,
) -> OpentimeApp:
    """Build the app; with no settings, read them from ``OPENTIME_*`` (for uvicorn --factory).

    ``worker_metrics_dir``: one of several workers of ``opentime serve`` (see ``app.worker_metrics``).
    """
    if settings is None:
        settings = load_settings(os.environ).settings

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[dict[str, Any]]:
        async with (
            running_services(settings, clock=clock, worker_metrics_dir=worker_metrics_dir) as services,
            published(services),  # its last snapshot is taken before the services close
        ):
            yield {"services": services}

    starlette = Starlette(
        routes=[
            *ops.routes,
            *openapi.routes,
            *api.routes,
            *privacy.routes,
            *reports.routes,
            *preview.routes,
            *webhooks.routes,
            *assets.routes,
        ],
        lifespan=lifespan,
        middleware=[Middleware(logs.RequestIds)],
        exception_handlers={
            HTTPException: _http_exception,
            HTTPError: _opentime_error,
            StoreError: _store_error,
            RateLimited: rate_limited,
        },
    )
    # A redirect is fatal to an AMP XHR (Gmail fails it): never add or strip slashes.
    starlette.router.redirect_slashes = False
    policy = SenderPolicy(settings.allowed_senders)
    open_time = {route.segment: OpenTimeEndpoint(route, policy) for route in ROUTES}
    return OpentimeApp(starlette, open_time, access_log=settings.access_log)


async def _http_exception(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 405:
        return _method_not_allowed(request, exc)
    return _refusal(exc.detail, exc.status_code, exc.headers)


def _method_not_allowed(request: Request, exc: HTTPException) -> Response:
    """A 405 names every method served at that path, the way open-time routes name theirs."""
    methods = path_methods(request.app.router.routes, request.scope)
    if not methods:  # not raised by the router: trust what the raiser said
        return _refusal(exc.detail, 405, exc.headers)
    headers = {k: v for k, v in (exc.headers or {}).items() if k.lower() != "allow"}
    message = f"method {request.method} not allowed: use {methods[0]}"
    return _refusal(message, 405, {**headers, "allow": allow_header(methods)})


async def _opentime_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPError)
    return _refusal(exc.message, exc.status_code, exc.headers)


async def _store_error(request: Request, exc: Exception) -> Response:
    # The route template, not the path: paths can hold customer ids (personal data).
    route = getattr(request.scope.get("route"), "path", "?")
    logger.warning("store unavailable for %s %s", request.method, route, exc_info=exc)
    return _refusal("storage is unavailable, try again", 503, {"retry-after": "5"})


def _refusal(message: str, status: int, headers: Mapping[str, str] | None) -> Response:
    """A JSON error no cache may keep: a CDN in front must not serve one request's 4xx/5xx to others."""
    return JSONResponse({"error": message}, status, headers={**(headers or {}), **NO_STORE_HEADERS})
