"""Reusable JSON Schemas (2020-12) of what ``/api/*`` and ``/webhooks/*`` take and answer.

Each schema says what the handler really checks, with the limits taken from the modules that enforce
them, so a limit changed there changes the document too. Rules JSON Schema cannot say (an id counted
in UTF-8 bytes, a time at most an hour ahead, a campaign that exists) are in the descriptions.
``document.py`` puts these under ``components/schemas``; refer to one with ``ref("Name")``.
"""

from __future__ import annotations

from typing import Any

from app.ingest.events import EVENT_FIELDS, MAX_EVENTS, MAX_ID_LENGTH
from app.privacy.records import MAX_ID_CHARS
from app.routes.api import FORMATS, MAX_RECIPIENTS
from app.security.webhook_auth import (
    BadSignature,
    MalformedSignature,
    MissingSignature,
    ReplayedSignature,
    StaleTimestamp,
)

Schema = dict[str, Any]

# Event ids: no C0 control character nor DEL; ids a token carries: no C1 either (tokens.py's rule).
NO_CONTROL = "^[^\\u0000-\\u001f\\u007f]*$"
RECIPIENT_PATTERN = "^[^\\u0000-\\u001f\\u007f-\\u009f]*$"
WEBHOOK_REASONS = [
    cls.reason
    for cls in (MissingSignature, MalformedSignature, StaleTimestamp, BadSignature, ReplayedSignature)
]


def ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def nullable(schema: Schema) -> Schema:
    return {"anyOf": [schema, {"type": "null"}]}


ERROR: Schema = {
    "type": "object",
    "description": "Every refusal: a message for a person. Some carry more fields (see each response).",
    "required": ["error"],
    "properties": {"error": {"type": "string", "minLength": 1}},
}

RECIPIENT_ID: Schema = {
    "type": "string",
    "minLength": 1,
    "maxLength": 200,
    "pattern": RECIPIENT_PATTERN,
    "description": "A recipient id: 1-200 bytes of UTF-8, no control characters.",
    "examples": ["cust-0000001"],
}

MAILBOX: Schema = {
    "type": "string",
    "minLength": 1,
    "description": "An address, with or without a display name (international domains allowed).",
    "examples": ["Shop <news@example.com>"],
}

RENDER_REQUEST: Schema = {
    "type": "object",
    "required": ["campaign", "recipients"],
    "additionalProperties": False,
    "properties": {
        "campaign": {"type": "string", "minLength": 1, "description": "A campaign name (404 if unknown)."},
        "recipients": {
            "type": "array",
            "minItems": 1,
            "maxItems": MAX_RECIPIENTS,
            "items": {
                "oneOf": [
                    ref("RecipientId"),
                    {
                        "type": "object",
                        "required": ["id"],
                        "additionalProperties": False,
                        "properties": {"id": ref("RecipientId"), "to": nullable(ref("Mailbox"))},
                    },
                ]
            },
        },
        "format": {"enum": list(FORMATS), "default": "parts"},
        "from": {
            **nullable(ref("Mailbox")),
            "description": "The From of an eml; default (or null): the campaign's sender.",
        },
    },
}

SIZES: Schema = {
    "type": "object",
    "required": ["text", "amp", "html"],
    "additionalProperties": False,
    "properties": {name: {"type": "integer", "minimum": 0} for name in ("text", "amp", "html")},
}

WARNINGS: Schema = {"type": "array", "items": {"type": "string"}}

RENDERED_PARTS: Schema = {
    "type": "object",
    "description": '"format": "parts" (or eml without a From): the three parts and their sizes in bytes.',
    "required": ["recipient", "subject", "text", "amp", "html", "sizes", "warnings", "found"],
    "additionalProperties": False,
    "properties": {
        "recipient": {"type": "string"},
        "subject": {"type": "string"},
        "text": {"type": "string"},
        "amp": {"type": "string"},
        "html": {"type": "string"},
        "sizes": SIZES,
        "warnings": WARNINGS,
        "found": {"type": "boolean", "description": "Whether the store has a readable profile."},
    },
}

RENDERED_EML: Schema = {
    "type": "object",
    "description": '"format": "eml": the whole message, 7-bit text.',
    "required": ["recipient", "eml", "warnings"],
    "additionalProperties": False,
    "properties": {"recipient": {"type": "string"}, "eml": {"type": "string"}, "warnings": WARNINGS},
}

RENDER_FAILED: Schema = {
    "type": "object",
    "description": "This recipient's email broke a size limit; the others rendered.",
    "required": ["recipient", "error", "problems"],
    "additionalProperties": False,
    "properties": {
        "recipient": {"type": "string"},
        "error": {"type": "string"},
        "problems": {"type": "array", "items": {"type": "string"}},
    },
}

RENDER_RESPONSE: Schema = {
    "type": "object",
    "required": ["campaign", "format", "results"],
    "additionalProperties": False,
    "properties": {
        "campaign": {"type": "string"},
        "format": {"enum": list(FORMATS)},
        "results": {
            "type": "array",
            "description": "One per recipient, in the request's order.",
            "items": {"oneOf": [ref("RenderedParts"), ref("RenderedEml"), ref("RenderFailed")]},
        },
    },
}

BLOCK_DATA: Schema = {
    "type": "object",
    "required": ["items", "live"],
    "additionalProperties": False,
    "properties": {
        "items": {"type": "array", "description": "The amp-list items the block shows."},
        "live": {"type": "boolean", "description": "false: the block's fallback items."},
    },
}

PERSONALIZATION: Schema = {
    "type": "object",
    "required": ["customer", "source", "version", "updated_at", "data_age_seconds", "campaigns"],
    "additionalProperties": False,
    "properties": {
        "customer": {"type": "string"},
        "source": {"enum": ["store", "upstream"]},
        "version": {"type": ["integer", "null"], "description": "null for an upstream profile."},
        "updated_at": {"type": "string", "format": "date-time"},
        "data_age_seconds": {"type": "number", "minimum": 0},
        "campaigns": {
            "type": "object",
            "additionalProperties": {
                "type": "object",
                "required": ["blocks"],
                "additionalProperties": False,
                "properties": {"blocks": {"type": "object", "additionalProperties": ref("BlockData")}},
            },
        },
    },
}

UNAVAILABLE: Schema = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {"type": "string"},
        "reason": {"type": "string", "description": "A fallback reason code, e.g. upstream-timeout."},
    },
}

EVENT: Schema = {
    "type": "object",
    "required": list(EVENT_FIELDS),
    "additionalProperties": False,
    "description": (
        "Built-in types: profile.updated (payload deep-merged, null deletes), purchase (total required; "
        "order_id, currency, items), cart.updated (items), cart.cleared ({}), product.viewed (sku; name, "
        "price, image, url); plus the server's custom types. occurred_at may be at most 1 h ahead. "
        "Integers fit in signed 64 bits; values nest at most 32 levels."
    ),
    "properties": {
        "id": {"type": "string", "minLength": 1, "maxLength": MAX_ID_LENGTH, "pattern": NO_CONTROL},
        "type": {"type": "string", "examples": ["profile.updated", "purchase"]},
        "recipient": {"type": "string", "minLength": 1, "maxLength": MAX_ID_LENGTH, "pattern": NO_CONTROL},
        "occurred_at": {
            "type": "string",
            "format": "date-time",
            "pattern": "^\\d{4}-\\d{2}-\\d{2}[Tt]\\d{2}:\\d{2}:\\d{2}(\\.\\d+)?([Zz]|[+-]\\d{2}:\\d{2})$",
        },
        "payload": {"type": "object"},
    },
}

EVENTS_REQUEST: Schema = {
    "description": f"One event, or a list of 1-{MAX_EVENTS}.",
    "oneOf": [ref("Event"), {"type": "array", "minItems": 1, "maxItems": MAX_EVENTS, "items": ref("Event")}],
}

EVENT_ERROR: Schema = {
    "type": "object",
    "required": ["index", "field", "error"],
    "additionalProperties": False,
    "properties": {
        "index": {"type": "integer", "minimum": 0},
        "id": {"type": "string"},
        "field": {"type": "string", "description": "Where, e.g. payload.items[0].price."},
        "error": {"type": "string"},
    },
}

EVENTS_RESPONSE: Schema = {
    "type": "object",
    "required": ["applied", "duplicates", "rejected", "results", "errors"],
    "additionalProperties": False,
    "properties": {
        "applied": {"type": "integer", "minimum": 0},
        "duplicates": {"type": "integer", "minimum": 0},
        "rejected": {"type": "integer", "minimum": 0},
        "results": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["index", "status"],
                "additionalProperties": False,
                "properties": {
                    "index": {"type": "integer", "minimum": 0},
                    "id": {"type": "string"},
                    "status": {"enum": ["applied", "duplicate", "rejected"]},
                },
            },
        },
        "errors": {"type": "array", "items": ref("EventError")},
    },
}

EVENTS_REFUSED: Schema = {
    "type": "object",
    "required": ["error"],
    "additionalProperties": False,
    "properties": {
        "error": {"type": "string"},
        "errors": {"type": "array", "items": ref("EventError"), "description": "When no event was valid."},
    },
}

SIGNATURE_REFUSED: Schema = {
    "type": "object",
    "required": ["error", "reason"],
    "additionalProperties": False,
    "properties": {"error": {"type": "string"}, "reason": {"enum": WEBHOOK_REASONS}},
}

OPENAPI_DOCUMENT: Schema = {
    "type": "object",
    "required": ["openapi", "info", "paths"],
    "description": "This document.",
}

STORED_ID: Schema = {
    "type": "string",
    "minLength": 1,
    "maxLength": MAX_ID_CHARS,
    "pattern": NO_CONTROL,
    "description": f"A recipient id as stored: 1-{MAX_ID_CHARS} characters, no control characters.",
    "examples": ["cust-0000001"],
}

COUNTS: Schema = {
    "type": "object",
    "required": ["profiles", "events", "form_answers"],
    "additionalProperties": False,
    "properties": {
        "profiles": {"type": "integer", "minimum": 0, "maximum": 1},
        "events": {"type": "integer", "minimum": 0},
        "form_answers": {"type": "integer", "minimum": 0},
    },
}

TIME: Schema = {"type": "string", "format": "date-time", "description": "UTC, ISO 8601."}

ERASED: Schema = {
    "type": "object",
    "description": "The erasure record (kept without the id: a keyed hash of it) and what was removed.",
    "required": ["erased", "erasure_id", "erased_at", "removed"],
    "additionalProperties": False,
    "properties": {
        "erased": {"const": True},
        "erasure_id": {"type": "string", "pattern": "^[0-9a-f]{16}$"},
        "erased_at": TIME,
        "removed": COUNTS,
    },
}

EXPORT: Schema = {
    "type": "object",
    "description": "Everything stored about the customer (an access request).",
    "required": ["customer", "exported_at", "profile", "events", "form_answers", "erasures"],
    "additionalProperties": False,
    "properties": {
        "customer": {"type": "string"},
        "exported_at": TIME,
        "profile": nullable(
            {
                "type": "object",
                "required": ["attributes", "field_times", "version", "updated_at"],
                "properties": {
                    "attributes": {"description": "The profile (JSON; text if the stored bytes are not)."},
                    "field_times": {"description": "When each field was last set (JSON)."},
                    "version": {"type": "integer"},
                    "updated_at": TIME,
                },
            }
        ),
        "events": {
            "type": "array",
            "description": "Applied events: id, type and times (their payloads went into the profile).",
            "items": {
                "type": "object",
                "required": ["id", "type", "occurred_at", "received_at"],
                "properties": {
                    "id": {"type": "string"},
                    "type": {"type": "string"},
                    "occurred_at": {"type": "string"},
                    "received_at": TIME,
                },
            },
        },
        "form_answers": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["submission_id", "campaign", "block", "answer", "submitted_at"],
                "properties": {
                    "submission_id": {"type": "string"},
                    "campaign": {"type": "string"},
                    "block": {"type": "string"},
                    "answer": {},
                    "submitted_at": TIME,
                },
            },
        },
        "erasures": {
            "type": "array",
            "description": "Earlier erasures of this id (it was erased, then sent again as new data).",
            "items": {
                "type": "object",
                "required": ["erasure_id", "erased_at", "profiles", "events", "form_answers"],
                "properties": {
                    "erasure_id": {"type": "string"},
                    "erased_at": TIME,
                    "profiles": {"type": "integer", "minimum": 0},
                    "events": {"type": "integer", "minimum": 0},
                    "form_answers": {"type": "integer", "minimum": 0},
                },
            },
        },
    },
}

COUNT: Schema = {"type": "integer", "minimum": 0}
RATE: Schema = {"type": "number", "minimum": 0, "maximum": 1}

REPORT: Schema = {
    "type": "object",
    "required": ["campaign", "since", "until", "opens", "variants"],
    "additionalProperties": False,
    "properties": {
        "campaign": {"type": "string"},
        "since": nullable({"type": "string", "format": "date-time"}),
        "until": nullable({"type": "string", "format": "date-time"}),
        "opens": {
            "type": "array",
            "description": (
                "Open exposures per block, by fetch class: Apple's privacy prefetches and scanners apart"
                " from human opens (direct and through mail providers' proxies)."
            ),
            "items": {
                "type": "object",
                "required": ["block", "total", "human", "apple_prefetch", "scanner", "by_fetch_class"],
                "additionalProperties": False,
                "properties": {
                    "block": {"type": "string"},
                    "total": COUNT,
                    "human": COUNT,
                    "apple_prefetch": COUNT,
                    "scanner": COUNT,
                    "by_fetch_class": {"type": "object", "additionalProperties": COUNT},
                },
            },
        },
        "variants": {
            "type": "array",
            "description": (
                "Per block, experiment and variant: exposures (scanners left out), clicks, click-through"
                " with its 95% Wilson interval, and for an experiment's variants the two-sided"
                " two-proportion z-test against the control (null for the control and for rules)."
            ),
            "items": {
                "type": "object",
                "required": [
                    "block",
                    "experiment",
                    "variant",
                    "role",
                    "exposures",
                    "recorded",
                    "clicks",
                    "ctr",
                    "ci95",
                    "z",
                    "p_value",
                ],
                "additionalProperties": False,
                "properties": {
                    "block": {"type": "string"},
                    "experiment": nullable({"type": "string"}),
                    "variant": {"type": "string"},
                    "role": {"enum": ["control", "variant", "holdout", "rule"]},
                    "exposures": {
                        **COUNT,
                        "description": "Estimated: recorded opens / exposure_sample_rate.",
                    },
                    "recorded": {**COUNT, "description": "Opens really recorded."},
                    "clicks": COUNT,
                    "ctr": RATE,
                    "ci95": {"type": "array", "items": RATE, "minItems": 2, "maxItems": 2},
                    "z": nullable({"type": "number"}),
                    "p_value": nullable(RATE),
                },
            },
        },
    },
}

COMPONENTS: dict[str, Schema] = {
    "Error": ERROR,
    "RecipientId": RECIPIENT_ID,
    "Mailbox": MAILBOX,
    "RenderRequest": RENDER_REQUEST,
    "RenderedParts": RENDERED_PARTS,
    "RenderedEml": RENDERED_EML,
    "RenderFailed": RENDER_FAILED,
    "RenderResponse": RENDER_RESPONSE,
    "BlockData": BLOCK_DATA,
    "Personalization": PERSONALIZATION,
    "Unavailable": UNAVAILABLE,
    "Event": EVENT,
    "EventsRequest": EVENTS_REQUEST,
    "EventError": EVENT_ERROR,
    "EventsResponse": EVENTS_RESPONSE,
    "EventsRefused": EVENTS_REFUSED,
    "SignatureRefused": SIGNATURE_REFUSED,
    "OpenApiDocument": OPENAPI_DOCUMENT,
    "StoredId": STORED_ID,
    "Erased": ERASED,
    "Export": EXPORT,
    "Report": REPORT,
}
