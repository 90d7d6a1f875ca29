"""Every 405, from every route of a real server, carries an ``Allow`` header naming what is allowed."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import pytest
from starlette.routing import Route

from app.app import create_app
from app.config import Settings
from app.methods import allow_header, ordered, path_methods
from app.open_time.routes import ROUTES
from tests.conftest import SENDER
from tests.servers import free_port, running

METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
# One URL of each open-time route (the method is checked before the token).
OPEN_TIME_PATHS = {
    "list": "/v1/t/list/hello.json",
    "img": "/v1/t/img/banner.png",
    "html": "/v1/t/html/picks",
    "view": "/v1/t/view",
    "click": "/v1/t/click/x/0",
    "form": "/v1/t/form/rate",
}


def every_route(settings: Settings) -> list[tuple[str, list[str]]]:
    """(a URL of the route, the methods it allows) for every route the app has."""
    routes = [
        (re.sub(r"\{[^}]+\}", "x", route.path), ordered(route.methods or ()))
        for route in create_app(settings).starlette.router.routes
        if isinstance(route, Route)
    ]
    assert set(OPEN_TIME_PATHS) == {route.segment for route in ROUTES}, "add the new route's URL above"
    for route in ROUTES:
        allowed = [*route.methods, *(["OPTIONS"] if route.cors else [])]
        routes.append((OPEN_TIME_PATHS[route.segment], ordered(allowed)))
    return routes


@pytest.mark.server
def test_every_405_names_the_allowed_methods(settings: Settings, tmp_path: Path) -> None:
    port = free_port()
    config = tmp_path / "opentime.toml"
    config.write_text(
        f'public_base_url = "http://127.0.0.1:{port}"\nkeys_file = "{settings.keys_file}"\n'
        f'database_url = "{settings.database_url}"\nallowed_senders = ["{SENDER}"]\nport = {port}\n'
    )
    routes = every_route(settings)
    assert len(routes) >= 12  # ops, api, preview, webhooks and the open-time routes
    refused = 0
    # One keep-alive connection for everything: a HEAD answered with a body would garble what follows.
    with (
        running(["serve", "--config", str(config)], port, tmp_path / "server.log"),
        httpx.Client(base_url=f"http://127.0.0.1:{port}", headers={"AMP-Email-Sender": SENDER}) as client,
    ):
        for path, allowed in routes:
            for method in METHODS:
                response = client.request(method, path)
                where = f"{method} {path}"
                if method in allowed:
                    assert response.status_code != 405, where
                    continue
                refused += 1
                assert response.status_code == 405, where
                assert response.headers["allow"] == ", ".join(allowed), where
                assert response.headers["content-type"] == "application/json", where
                if method == "HEAD":
                    assert response.content == b"" and int(response.headers["content-length"]) > 0, where
                else:
                    assert response.json() == {"error": f"method {method} not allowed: use {allowed[0]}"}, (
                        where
                    )
        assert client.get("/healthz").json() == {"status": "ok"}  # the connection is still in step
    assert refused >= 50


def test_allow_lists_methods_in_one_order() -> None:
    assert ordered({"OPTIONS", "HEAD", "POST", "GET"}) == ["GET", "HEAD", "POST", "OPTIONS"]
    assert allow_header(["PROPFIND", "DELETE", "GET", "GET"]) == "GET, DELETE, PROPFIND"


async def nothing() -> None:  # pragma: no cover - never called
    pass


def test_path_methods_joins_every_route_of_the_path() -> None:
    # Starlette's own 405 names only the first route of the path; a second one with other methods
    # must be in the Allow header too.
    routes = [
        Route("/things", nothing, methods=["GET"]),
        Route("/things", nothing, methods=["POST"]),
        Route("/things/{id}", nothing, methods=["DELETE"]),
    ]
    scope = {"type": "http", "method": "PUT", "path": "/things", "root_path": ""}
    assert path_methods(routes, scope) == ["GET", "HEAD", "POST"]
    assert path_methods(routes, {**scope, "path": "/things/3"}) == ["DELETE"]
    assert path_methods(routes, {**scope, "path": "/elsewhere"}) == []
