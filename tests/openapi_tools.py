"""Checking real answers against the OpenAPI document, and a real server to get them from."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson
from jsonschema import Draft202012Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from app.config import Settings
from app.security.webhook_auth import sign_header
from tests.servers import free_port, running, server_config
from tests.test_routes_api import make_key

SECRET = "whsec-openapi-test-0123456789"
DOC_URI = "urn:opentime:openapi"


@dataclass(frozen=True)
class ApiServer:
    base_url: str
    key: str  # an admin key: every scope
    narrow_key: str  # the "tokens" scope only: 403 on every documented operation


@contextmanager
def api_server(settings: Settings, tmp_path: Path) -> Iterator[ApiServer]:
    """A real ``opentime serve`` on 127.0.0.1 with API keys and a webhook secret."""
    key, narrow = make_key(settings, "admin"), make_key(settings, "tokens")
    port = free_port()
    config = server_config(settings, port, tmp_path / "opentime.toml", webhook_secrets=(SECRET,))
    with running(["serve", "--config", str(config)], port, tmp_path / "server.log"):
        yield ApiServer(f"http://127.0.0.1:{port}", key, narrow)


def signed(body: bytes, secret: str = SECRET) -> dict[str, str]:
    """Headers of a webhook request whose body is ``body``, signed now."""
    return {
        "content-type": "application/json",
        "opentime-signature": sign_header([secret], int(time.time()), body),
    }


def escape(segment: str) -> str:
    return segment.replace("~", "~0").replace("/", "~1")


def validator(doc: dict[str, Any], pointer: str) -> Draft202012Validator:
    """A validator for the schema at JSON pointer ``pointer`` of the document, its $refs resolved."""
    registry: Registry[Any] = Registry().with_resource(DOC_URI, Resource.from_contents(doc, DRAFT202012))
    return Draft202012Validator({"$ref": f"{DOC_URI}#{pointer}"}, registry=registry)


def check_answer(doc: dict[str, Any], path: str, method: str, response: httpx.Response) -> None:
    """Raise AssertionError unless ``response`` is a documented answer of the operation: its status,
    its JSON body against the schema, and every documented header present and valid."""
    operation = doc["paths"][path][method.lower()]
    status = str(response.status_code)
    assert status in operation["responses"], f"{method} {path}: {status} undocumented: {response.text}"
    documented = operation["responses"][status]
    assert response.headers["content-type"] == "application/json", response.headers
    pointer = f"/paths/{escape(path)}/{method.lower()}/responses/{status}/content/application~1json/schema"
    errors = [e.message for e in validator(doc, pointer).iter_errors(orjson.loads(response.content))]
    assert not errors, f"{method} {path} {status}: {errors[:3]} in {response.text[:500]}"
    for name, spec in documented.get("headers", {}).items():
        spec = _header(doc, spec)
        value = response.headers.get(name)
        assert value is not None or not spec.get("required"), f"{method} {path} {status}: no {name}"
        if value is not None:
            problems = list(Draft202012Validator(spec["schema"]).iter_errors(value))
            assert not problems, f"{method} {path} {status}: {name}: {value!r}: {problems[0].message}"


def _header(doc: dict[str, Any], spec: dict[str, Any]) -> dict[str, Any]:
    if "$ref" in spec:
        name = spec["$ref"].rpartition("/")[2]
        return dict(doc["components"]["headers"][name])
    return spec
