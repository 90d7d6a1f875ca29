"""The OpenAPI 3.1 description of ``/api/*`` and ``/webhooks/*``: pure data, built by ``document()``.

One entry of ``PATHS`` per path, built by one function that names every method and every status the
handler really answers (``tests/test_openapi.py`` checks each route is described with exactly its
methods, and ``tests/test_schemathesis.py`` checks the answers of a real server against it). To
describe a new path: write its request and response schemas in ``schemas.py`` (with their names in
``COMPONENTS``), a function here returning ``{method: operation}``, and a row in ``PATHS``.

Every answer, success or refusal, is JSON with ``Cache-Control: no-store`` except this document's own,
which anyone may keep for a while. A 405 (a method the path does not serve) is a JSON error with
``Allow``; it is not listed per operation since it answers methods the operations are not.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from app.ingest.events import MAX_EVENTS
from app.openapi.schemas import COMPONENTS, Schema, ref
from app.routes.api import MAX_BODY_BYTES, MAX_RECIPIENTS
from app.security.apikeys import ERASE, EXPORT, REPORTS, SCOPES
from app.security.webhook_auth import HEADER, MAX_SIGNATURES

Operation = dict[str, Any]
OPENAPI_VERSION = "3.1.0"
OPENAPI_PATH = "/api/openapi.json"
DOCUMENT_CACHE_CONTROL = "public, max-age=300"  # a deploy changes it; five minutes stale is harmless

BEARER = "apiKeyBearer"
API_KEY_HEADER = "apiKeyHeader"
SIGNATURE = "webhookSignature"

SECURITY_SCHEMES: dict[str, Schema] = {
    BEARER: {
        "type": "http",
        "scheme": "bearer",
        "bearerFormat": "otk_<key id>_<secret>",
        "description": "An API key (`opentime apikeys create`). The operation lists the scope it needs.",
    },
    API_KEY_HEADER: {
        "type": "apiKey",
        "in": "header",
        "name": "X-API-Key",
        "description": "The same API key, for clients that cannot send Authorization.",
    },
    SIGNATURE: {
        "type": "apiKey",
        "in": "header",
        "name": "Opentime-Signature",
        "description": (
            '`t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>." + raw body)>`; up to '
            f"{MAX_SIGNATURES} v1 values (secret rotation). t within webhook_tolerance_seconds of the "
            "server clock; a signature already seen in that window is refused (replayed)."
        ),
    },
}

HEADERS: dict[str, Schema] = {
    "NoStore": {
        "description": "No cache may keep the answer.",
        "required": True,
        "schema": {"type": "string", "const": "no-store"},
    },
    "RetryAfter": {
        "description": "Seconds to wait before retrying.",
        "required": True,
        "schema": {"type": "string", "pattern": "^[0-9]+$"},
    },
    "BearerChallenge": {
        "description": "The scheme to authenticate with.",
        "required": True,
        "schema": {"type": "string", "const": "Bearer"},
    },
    "RateLimit": {
        "description": "The limit's burst, what remains of it (0) and whole seconds until it is full again.",
        "required": True,
        "schema": {"type": "string", "pattern": "^[0-9]+$"},
    },
    "Close": {
        "description": "Refused before the body was read: the connection is closed, the body never read.",
        "required": True,
        "schema": {"type": "string", "const": "close"},
    },
}


def header(name: str) -> Schema:
    return {"$ref": f"#/components/headers/{name}"}


def answer(description: str, schema: Schema, headers: Mapping[str, Schema] | None = None) -> Schema:
    """A JSON response; every one carries ``Cache-Control: no-store``, and ``headers`` besides."""
    return {
        "description": description,
        "headers": {"Cache-Control": header("NoStore"), **(headers or {})},
        "content": {"application/json": {"schema": schema}},
    }


def refusal(description: str, schema: str = "Error", headers: Mapping[str, Schema] | None = None) -> Schema:
    return answer(description, ref(schema), headers)


def json_body(schema: str, examples: Mapping[str, Any]) -> Schema:
    return {
        "required": True,
        "content": {
            "application/json": {
                "schema": ref(schema),
                "examples": {name: {"value": value} for name, value in examples.items()},
            }
        },
    }


def api_key(scope: str) -> list[dict[str, list[str]]]:
    """Either scheme, with the scope the key needs (``admin`` grants every scope)."""
    if scope not in SCOPES:
        raise ValueError(f"unknown scope {scope!r}; declare it in app.security.apikeys.SCOPES")
    return [{BEARER: [scope]}, {API_KEY_HEADER: [scope]}]


def too_many(counted_by: str, setting: str) -> Schema:
    return refusal(
        f"Over the {counted_by}'s rate limit ({setting}): nothing was done, retry after Retry-After.",
        headers={
            "Retry-After": header("RetryAfter"),
            "RateLimit-Limit": header("RateLimit"),
            "RateLimit-Remaining": header("RateLimit"),
            "RateLimit-Reset": header("RateLimit"),
        },
    )


def api_refusals() -> dict[str, Schema]:
    """What every API-key operation may answer besides its own statuses."""
    return {
        "429": too_many("API key", "rate_limit_api"),
        "401": refusal(
            "No API key, or one that is malformed, unknown or revoked.",
            headers={"WWW-Authenticate": header("BearerChallenge")},
        ),
        "403": refusal("The API key lacks the operation's scope."),
        "503": refusal(
            "The store is unavailable: nothing was done, retry.",
            headers={"Retry-After": header("RetryAfter")},
        ),
    }


def render() -> dict[str, Operation]:
    example = {
        "campaign": "demo",
        "recipients": ["cust-0000001", {"id": "cust-0000002", "to": "ada@example.org"}],
    }
    eml = {
        "campaign": "demo",
        "format": "eml",
        "from": "Shop <news@example.com>",
        "recipients": ["cust-0000001"],
    }
    return {
        "post": {
            "operationId": "render",
            "summary": "Render a campaign for recipients at send time",
            "description": (
                f"The three parts (or a whole .eml) for up to {MAX_RECIPIENTS} recipients, each with its "
                "signed open-time URLs. A recipient without a profile renders with the fallback content "
                f"(`found: false`). Body at most {MAX_BODY_BYTES} bytes."
            ),
            "tags": ["send time"],
            "security": api_key("render"),
            "requestBody": json_body("RenderRequest", {"parts": example, "eml": eml}),
            "responses": {
                "200": answer("One result per recipient, in order.", ref("RenderResponse")),
                "400": refusal(
                    "Not JSON, an unknown field, a bad recipient id or address, or an eml without From."
                ),
                **api_refusals(),
                "404": refusal("Unknown campaign."),
                "408": refusal(
                    "The body did not arrive within request_read_timeout_seconds.",
                    headers={"Connection": header("Close")},
                ),
                "413": refusal(f"Body larger than {MAX_BODY_BYTES} bytes."),
                "415": refusal("Content-Type is not application/json."),
                "422": refusal("A campaign template failed to render."),
            },
        }
    }


def personalization() -> dict[str, Operation]:
    return {
        "get": {
            "operationId": "personalization",
            "summary": "What the templates see for a customer",
            "description": (
                "Per campaign and list block: the items and whether they are live, with the profile's "
                "source (the store, else the upstream), version, updated_at and age."
            ),
            "tags": ["personalization"],
            "security": api_key("personalization:read"),
            "parameters": [
                {
                    "name": "customer",
                    "in": "path",
                    "required": True,
                    "schema": ref("RecipientId"),
                    "example": "cust-0000001",
                },
                {
                    "name": "campaign",
                    "in": "query",
                    "required": False,
                    "description": "Only this campaign (default: every campaign).",
                    "schema": {"type": "string"},
                    "example": "demo",
                },
            ],
            "responses": {
                "200": answer("The customer's data per campaign and block.", ref("Personalization")),
                "400": refusal("The customer id is not one a token can carry (length, control characters)."),
                **api_refusals(),
                "404": refusal("Unknown customer or campaign."),
                "422": refusal("The stored profile is not a JSON object."),
                "503": refusal(
                    "The store or the upstream failed or was too slow: retry.",
                    "Unavailable",
                    headers={"Retry-After": header("RetryAfter")},
                ),
            },
        }
    }


def events() -> dict[str, Operation]:
    event = {
        "id": "evt-123",
        "type": "purchase",
        "recipient": "cust-0000001",
        "occurred_at": "2026-05-01T10:00:00Z",
        "payload": {"order_id": "o-9", "total": 42.5, "currency": "EUR"},
    }
    update = {**event, "id": "evt-124", "type": "profile.updated", "payload": {"first_name": "Zoe"}}
    close = {"Connection": header("Close")}
    return {
        "post": {
            "operationId": "receiveEvents",
            "summary": "Signed customer-data events",
            "description": (
                f"One event or up to {MAX_EVENTS}, applied durably (a 2xx means committed), each "
                "accepted or rejected on its own. Off (503) unless webhook_secrets is set. Checked "
                "before the body is read: content type, declared size, signature header and timestamp."
            ),
            "tags": ["events"],
            "security": [{SIGNATURE: []}],
            "requestBody": json_body("EventsRequest", {"one": event, "batch": [event, update]}),
            "responses": {
                "200": answer("Every event applied or a duplicate.", ref("EventsResponse")),
                "207": answer(
                    "Some events rejected (errors says which and why); the others applied.",
                    ref("EventsResponse"),
                ),
                "400": refusal("Not JSON, not events, or no valid event.", "EventsRefused"),
                "401": refusal("Signature missing, malformed, stale, wrong or replayed.", "SignatureRefused"),
                "408": refusal("The body did not arrive within request_read_timeout_seconds.", headers=close),
                "413": refusal("Body larger than webhook_max_body_bytes.", headers=close),
                "415": refusal("Content-Type is not application/json.", headers=close),
                "429": too_many("webhook secret", "rate_limit_webhooks"),
                "503": refusal("Webhooks disabled, too many bodies being read, or the store failed: retry."),
            },
        }
    }


def customer_id() -> Schema:
    return {
        "name": "customer",
        "in": "path",
        "required": True,
        "schema": ref("StoredId"),
        "example": "cust-0000001",
    }


def customer() -> dict[str, Operation]:
    return {
        "delete": {
            "operationId": "eraseCustomer",
            "summary": "Erase a customer (privacy request)",
            "description": (
                "Removes the profile with its field times, the ids of its events, its form answers and "
                "every cached answer on every node, and records the erasure without the id (a keyed "
                "hash of it). Idempotent: an id the store does not know is erased with counts 0. Ids "
                "with a `/` are erased with `opentime erase`."
            ),
            "tags": ["privacy"],
            "security": api_key(ERASE),
            "parameters": [customer_id()],
            "responses": {
                "200": answer("Erased: the record's id, time and what was removed.", ref("Erased")),
                "400": refusal("The id is not one a store can hold (length, control characters)."),
                **api_refusals(),
            },
        }
    }


def export() -> dict[str, Operation]:
    return {
        "get": {
            "operationId": "exportCustomer",
            "summary": "Everything stored about a customer (access request)",
            "description": "An unknown id answers 200 with `profile: null` and empty lists.",
            "tags": ["privacy"],
            "security": api_key(EXPORT),
            "parameters": [customer_id()],
            "responses": {
                "200": answer("The customer's stored data.", ref("Export")),
                "400": refusal("The id is not one a store can hold (length, control characters)."),
                **api_refusals(),
            },
        }
    }


def time_bound(name: str, description: str) -> Schema:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "description": f"{description} (ISO 8601 date or time; UTC unless an offset is given).",
        "schema": {"type": "string"},
        "example": "2026-05-01T00:00:00Z",
    }


def report() -> dict[str, Operation]:
    return {
        "get": {
            "operationId": "campaignReport",
            "summary": "A campaign's opens and click-through per variant",
            "description": (
                "Built from the exposure counters in the store (hourly; an open reaches them within "
                "exposure_flush_seconds). The hours that start in [since, until) count. The same "
                "document as `opentime report --json`."
            ),
            "tags": ["reports"],
            "security": api_key(REPORTS),
            "parameters": [
                {
                    "name": "campaign",
                    "in": "path",
                    "required": True,
                    "schema": {"type": "string"},
                    "example": "demo",
                },
                time_bound("since", "Hours from this time"),
                time_bound("until", "Hours before this time"),
            ],
            "responses": {
                "200": answer("The report.", ref("Report")),
                "400": refusal("since or until is not an ISO 8601 date or time."),
                **api_refusals(),
                "404": refusal("The server serves no campaign of that name."),
            },
        }
    }


def openapi() -> dict[str, Operation]:
    return {
        "get": {
            "operationId": "openapi",
            "summary": "This document",
            "tags": ["meta"],
            "security": [],
            "responses": {
                "200": {
                    "description": "The OpenAPI 3.1 description of /api and /webhooks.",
                    "headers": {
                        "Cache-Control": {
                            "required": True,
                            "schema": {"type": "string", "const": DOCUMENT_CACHE_CONTROL},
                        }
                    },
                    "content": {"application/json": {"schema": ref("OpenApiDocument")}},
                }
            },
        }
    }


PATHS: dict[str, Callable[[], dict[str, Operation]]] = {
    "/api/render": render,
    "/api/customers/{customer}/personalization": personalization,
    "/api/customers/{customer}": customer,
    "/api/customers/{customer}/export": export,
    "/api/campaigns/{campaign}/report": report,
    OPENAPI_PATH: openapi,
    "/webhooks/events": events,
}


def document(version: str) -> dict[str, Any]:
    """The whole description; ``version`` is the server's (the API's version follows it)."""
    return {
        "openapi": OPENAPI_VERSION,
        "info": {
            "title": "Opentime API",
            "version": version,
            "description": (
                "Send-time rendering and personalization data behind API keys, and signed customer-data "
                'events. Every refusal is JSON `{"error": ...}` with Cache-Control: no-store; a method a '
                f"path does not serve is a 405 with Allow. The {HEADER} header signs webhook bodies."
            ),
        },
        "paths": {path: build() for path, build in PATHS.items()},
        "components": {"schemas": COMPONENTS, "securitySchemes": SECURITY_SCHEMES, "headers": HEADERS},
    }
