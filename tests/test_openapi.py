"""The OpenAPI document: valid, served, in step with the routes, and true to what a real server answers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from openapi_spec_validator import validate
from starlette.routing import Route
from starlette.testclient import TestClient

from app.app import create_app
from app.config import Settings
from app.openapi.document import DOCUMENT_CACHE_CONTROL, OPENAPI_PATH, document
from tests.openapi_tools import SECRET, ApiServer, api_server, check_answer, escape, signed, validator

METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")
DOCUMENTED_PREFIXES = ("/api/", "/webhooks/")


@pytest.fixture
def doc() -> dict[str, Any]:
    return document("test")


def test_document_is_valid_openapi_3_1(doc: dict[str, Any]) -> None:
    validate(doc)  # raises on any violation of the OpenAPI 3.1 schema, $refs included
    assert doc["openapi"].startswith("3.1")


def test_served_without_a_key_and_cacheable(client: TestClient) -> None:
    response = client.get(OPENAPI_PATH)
    assert response.status_code == 200
    assert response.headers["cache-control"] == DOCUMENT_CACHE_CONTROL
    assert response.headers["content-type"] == "application/json"
    served = response.json()
    validate(served)
    assert set(served["paths"]) == set(document("x")["paths"])


def served_methods(settings: Settings) -> dict[str, set[str]]:
    """Every Starlette route under /api and /webhooks, with the methods it answers. HEAD, which
    Starlette adds to every GET route, is left out: OpenAPI describes it with the GET."""
    methods: dict[str, set[str]] = {}
    for route in create_app(settings).starlette.routes:
        if isinstance(route, Route) and route.path.startswith(DOCUMENTED_PREFIXES):
            served = set(route.methods or ())
            if "GET" in served:
                served.discard("HEAD")
            methods.setdefault(route.path, set()).update(m.lower() for m in served)
    return methods


def test_every_route_is_documented_with_exactly_its_methods(settings: Settings, doc: dict[str, Any]) -> None:
    served = served_methods(settings)
    documented = {path: {m for m in item if m in METHODS} for path, item in doc["paths"].items()}
    assert served, "no route found: the prefixes are wrong"
    assert documented == served


def test_every_operation_names_security_and_a_json_error_for_each_refusal(doc: dict[str, Any]) -> None:
    for path, item in doc["paths"].items():
        for method, operation in item.items():
            assert "security" in operation, f"{method} {path}"
            for status, answer in operation["responses"].items():
                assert "application/json" in answer["content"], f"{method} {path} {status}"
                if status >= "400":
                    schema = answer["content"]["application/json"]["schema"]["$ref"].rpartition("/")[2]
                    assert "error" in doc["components"]["schemas"][schema]["required"], schema
                    assert answer["headers"]["Cache-Control"] == {"$ref": "#/components/headers/NoStore"}


def examples(doc: dict[str, Any]) -> list[tuple[str, Any]]:
    """(JSON pointer of the schema, example) for every request body and parameter example."""
    found = []
    for path, item in doc["paths"].items():
        for method, operation in item.items():
            at = f"/paths/{escape(path)}/{method}"
            content = operation.get("requestBody", {}).get("content", {})
            for media, body in content.items():
                pointer = f"{at}/requestBody/content/{escape(media)}/schema"
                found += [(pointer, example["value"]) for example in body.get("examples", {}).values()]
            for index, parameter in enumerate(operation.get("parameters", [])):
                if "example" in parameter:
                    found.append((f"{at}/parameters/{index}/schema", parameter["example"]))
    return found


def test_examples_are_valid_against_their_schemas(doc: dict[str, Any]) -> None:
    found = examples(doc)
    assert len(found) >= 6
    for pointer, example in found:
        errors = [e.message for e in validator(doc, pointer).iter_errors(example)]
        assert not errors, f"{pointer}: {errors}"


def test_schemas_refuse_what_the_handlers_refuse(doc: dict[str, Any]) -> None:
    """The schemas are not vacuous: requests the handlers answer with a 400 are invalid."""
    render = validator(doc, "/components/schemas/RenderRequest")
    event = validator(doc, "/components/schemas/EventsRequest")
    refused = [
        (render, {"campaign": "demo"}),
        (render, {"campaign": "demo", "recipients": []}),
        (render, {"campaign": "demo", "recipients": ["a"], "extra": 1}),
        (render, {"campaign": "demo", "recipients": [{"id": "a", "To": "x@example.com"}]}),
        (render, {"campaign": "demo", "recipients": ["a\u0000b"]}),
        (render, {"campaign": "demo", "recipients": ["a"], "format": "pdf"}),
        (event, []),
        (event, {"id": "e", "type": "purchase", "recipient": "r", "occurred_at": "yesterday", "payload": {}}),
        (event, {"id": "e", "type": "purchase", "recipient": "r", "occurred_at": "2026-01-01T00:00:00Z"}),
    ]
    for schema, body in refused:
        assert not schema.is_valid(body), body


@pytest.fixture
def server(settings: Settings, tmp_path: Path) -> Any:
    with api_server(settings, tmp_path) as running_server:
        yield running_server


def event(event_id: str, **changes: Any) -> dict[str, Any]:
    base = {
        "id": event_id,
        "type": "profile.updated",
        "recipient": "cust-0000001",
        "occurred_at": "2026-05-01T10:00:00Z",
        "payload": {"first_name": "Zoe"},
    }
    return {**base, **changes}


def post_events(server: ApiServer, body: Any, headers: dict[str, str] | None = None) -> httpx.Response:
    raw = orjson.dumps(body)
    return httpx.post(f"{server.base_url}/webhooks/events", content=raw, headers=headers or signed(raw))


@pytest.mark.server
def test_real_answers_match_the_document(server: ApiServer, doc: dict[str, Any]) -> None:
    base, bearer, narrow = (
        server.base_url,
        {"authorization": f"Bearer {server.key}"},
        {"x-api-key": server.narrow_key},
    )
    render = "/api/render"
    calls: list[tuple[str, str, httpx.Response, int]] = [
        (
            render,
            "POST",
            httpx.post(
                base + render, json={"campaign": "demo", "recipients": ["cust-0000001"]}, headers=bearer
            ),
            200,
        ),
        (
            render,
            "POST",
            httpx.post(
                base + render,
                json={
                    "campaign": "demo",
                    "format": "eml",
                    "from": "Shop <news@example.com>",
                    "recipients": ["x"],
                },
                headers={"x-api-key": server.key},
            ),
            200,
        ),
        (render, "POST", httpx.post(base + render, json={"campaign": "demo"}, headers=bearer), 400),
        (render, "POST", httpx.post(base + render, json={"campaign": "demo", "recipients": ["a"]}), 401),
        (
            render,
            "POST",
            httpx.post(base + render, json={"campaign": "demo", "recipients": ["a"]}, headers=narrow),
            403,
        ),
        (
            render,
            "POST",
            httpx.post(base + render, json={"campaign": "nope", "recipients": ["a"]}, headers=bearer),
            404,
        ),
        (render, "POST", httpx.post(base + render, content=b"{}", headers=bearer), 415),
        (
            render,
            "POST",
            httpx.post(
                base + render,
                content=b" " * (1024 * 1024 + 1),
                headers={**bearer, "content-type": "application/json"},
            ),
            413,
        ),
    ]
    person = "/api/customers/{customer}/personalization"
    for customer, query, headers, status in [
        ("cust-0000001", "", bearer, 200),
        ("cust-0000001", "?campaign=demo", {"x-api-key": server.key}, 200),
        ("nobody", "", bearer, 404),
        ("cust-0000001", "?campaign=nope", bearer, 404),
        ("cust-0000001", "", {}, 401),
        ("cust-0000001", "", narrow, 403),
    ]:
        url = f"{base}/api/customers/{customer}/personalization{query}"
        calls.append((person, "GET", httpx.get(url, headers=headers), status))
    hook = "/webhooks/events"
    calls += [
        (hook, "POST", post_events(server, event("e-1")), 200),
        (hook, "POST", post_events(server, [event("e-2"), event("e-3", type="nope")]), 207),
        (hook, "POST", post_events(server, [event("e-4", type="nope")]), 400),
        (hook, "POST", post_events(server, event("e-5"), {"content-type": "application/json"}), 401),
        (
            hook,
            "POST",
            post_events(server, event("e-6"), {**signed(b"{}"), "content-type": "text/plain"}),
            415,
        ),
        (hook, "POST", post_events(server, event("e-7"), signed(b"other body", SECRET)), 401),
        (OPENAPI_PATH, "GET", httpx.get(base + OPENAPI_PATH), 200),
    ]
    for path, method, response, status in calls:
        assert response.status_code == status, (path, method, response.text)
        check_answer(doc, path, method, response)
    results = calls[0][2].json()["results"]
    assert results[0]["found"] is True and "/v1/" in results[0]["amp"]  # a real render, not an empty shell
    assert calls[-1][2].json() == orjson.loads(orjson.dumps(doc)) | {"info": calls[-1][2].json()["info"]}


@pytest.mark.server
def test_refusals_are_never_cached(server: ApiServer) -> None:
    """Regression: the app's error handlers answered 401/403/404/405/415/422/503 without Cache-Control,
    so a CDN in front could keep one client's refusal and serve it to the next."""
    base = server.base_url
    refusals = [
        httpx.post(f"{base}/api/render", json={}),  # 401 (no key)
        httpx.post(f"{base}/api/render", json={}, headers={"x-api-key": server.narrow_key}),  # 403
        httpx.post(f"{base}/api/render", content=b"{}", headers={"x-api-key": server.key}),  # 415
        httpx.get(f"{base}/api/render"),  # 405
        httpx.get(f"{base}/api/nothing-here"),  # 404 from the router
        httpx.put(f"{base}/webhooks/events"),  # 405
    ]
    assert [r.status_code for r in refusals] == [401, 403, 415, 405, 404, 405]
    for response in refusals:
        assert response.headers.get("cache-control") == "no-store", (response.status_code, response.headers)
        assert "error" in response.json()
    assert refusals[3].headers["allow"] == "POST"
    assert refusals[0].headers["www-authenticate"] == "Bearer"
    assert SECRET  # the server was started with webhooks on
