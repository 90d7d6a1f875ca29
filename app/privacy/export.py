"""The answer to an access request: everything the store holds about one recipient, as JSON (pure).

Stored bytes are decoded where they are JSON (attributes, field times, form answers); bytes that are
not (an unreadable profile) are given as text, so nothing stored is left out. Times are UTC ISO 8601.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson

from app.store.base import Erasure, RecipientData, StoredAnswer, StoredEvent, StoredProfile


def export_json(
    recipient_id: str, data: RecipientData, erasures: list[Erasure], now: float
) -> dict[str, Any]:
    return {
        "customer": recipient_id,
        "exported_at": iso(now),
        "profile": None if data.profile is None else _profile(data.profile),
        "events": [_event(event) for event in data.events],
        "form_answers": [_answer(answer) for answer in data.form_answers],
        "erasures": [_erasure(erasure) for erasure in erasures],
    }


def iso(moment: float) -> str:
    return datetime.fromtimestamp(moment, UTC).isoformat().replace("+00:00", "Z")


def _profile(profile: StoredProfile) -> dict[str, Any]:
    return {
        "attributes": _decoded(profile.attributes),
        "field_times": _decoded(profile.field_times),
        "version": profile.version,
        "updated_at": iso(profile.updated_at),
    }


def _event(event: StoredEvent) -> dict[str, Any]:
    # Only the event's id, type and time are stored: its payload went into the profile's attributes.
    return {
        "id": event.id,
        "type": event.type,
        "occurred_at": event.occurred_at,
        "received_at": iso(event.received_at),
    }


def _answer(answer: StoredAnswer) -> dict[str, Any]:
    return {
        "submission_id": answer.submission_id,
        "campaign": answer.campaign,
        "block": answer.block,
        "answer": _decoded(answer.payload),
        "submitted_at": iso(answer.created_at),
    }


def _erasure(erasure: Erasure) -> dict[str, Any]:
    return {"erasure_id": erasure.erasure_id, "erased_at": iso(erasure.erased_at), **removed(erasure)}


def removed(erasure: Erasure) -> dict[str, int]:
    return {"profiles": erasure.profiles, "events": erasure.events, "form_answers": erasure.form_answers}


def _decoded(raw: bytes) -> Any:
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return raw.decode("utf-8", "replace")
