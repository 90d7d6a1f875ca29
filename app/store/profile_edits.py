"""What webhook events and form answers do to one stored profile: pure, shared by every backend.

A backend reads the stored ``(attributes, field_times)`` bytes, lets these functions decide, and
writes back what they return; the rules themselves live in ``app.ingest.events`` and
``app.campaigns.forms``. Nothing here touches a connection.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

from app.campaigns.forms import AttrPath, ProfileConflict, check_paths
from app.ingest.events import Attributes, Event, FieldTimes, Stamp, apply_event, write_field

logger = logging.getLogger(__name__)

Stored = tuple[bytes | str, bytes | str | None]  # (attributes, field_times) as a backend returns them


@dataclass(slots=True)
class Working:
    """One recipient's profile while a transaction applies events to it."""

    attributes: Attributes
    field_times: FieldTimes
    original: tuple[bytes, bytes] | None  # stored (attributes, field_times); None: unreadable
    encoded: tuple[bytes, bytes] | None = None  # the current (attributes, field_times), once changed

    def apply(self, event: Event) -> None:
        """Apply ``event``; raises (and changes nothing) when it cannot be applied or encoded."""
        attributes, field_times = apply_event(self.attributes, self.field_times, event)
        # Encoded here, not at the end: a value the store cannot hold fails this event alone.
        self.encoded = (orjson.dumps(attributes), orjson.dumps(field_times))
        self.attributes, self.field_times = attributes, field_times

    def to_write(self) -> tuple[bytes, bytes] | None:
        """The (attributes, field_times) to store, or None when nothing visible changed."""
        if self.original is None or self.encoded is None or self.encoded == self.original:
            return None
        return self.encoded


def working(stored: Stored | None) -> Working:
    """The profile events apply to; ``original`` is None when it is unreadable (left alone)."""
    if stored is None:
        return Working({}, {}, (b"{}", b"{}"))
    raw_attributes, raw_times = _raw(stored[0]), _raw(stored[1] or b"{}")
    try:
        attributes, times = orjson.loads(raw_attributes), orjson.loads(raw_times)
    except orjson.JSONDecodeError:
        attributes = times = None
    if not isinstance(attributes, dict):
        # Overwriting a profile we cannot read would lose data.
        logger.warning("events skipped for a recipient whose stored attributes are not a JSON object")
        return Working({}, {}, None)
    return Working(attributes, times if isinstance(times, dict) else {}, (raw_attributes, raw_times))


@dataclass(frozen=True, slots=True)
class FormEdit:
    attributes: bytes | None  # the new attributes, when they changed (the version bumps)
    field_times: bytes  # the new field times (always restamped)


def form_edit(
    stored: Stored | None, updates: tuple[tuple[AttrPath, Any], ...], submission_id: str, now: float
) -> FormEdit | None:
    """A form answer's updates applied to the stored profile, stamped ``(now, submission_id)`` like an
    event's fields; None when the profile is left alone (unusable, or the same answer at the same time)."""
    try:
        attributes = {} if stored is None else orjson.loads(_raw(stored[0]))
        if not isinstance(attributes, dict):
            raise ProfileConflict("stored attributes are not a JSON object")
        check_paths(attributes, updates)
        times = _field_times(stored)
    except (orjson.JSONDecodeError, ProfileConflict) as exc:
        # The answer is still stored; overwriting a profile we cannot read would lose data.
        logger.warning("form profile update skipped for one recipient: %s", exc)
        return None
    before = orjson.dumps(attributes), orjson.dumps(times)
    stamp: Stamp = (rfc3339(now), submission_id)
    for path, value in updates:
        write_field(attributes, times, ".".join(path), value, stamp)
    after = orjson.dumps(attributes), orjson.dumps(times)
    if after == before:
        return None
    return FormEdit(after[0] if after[0] != before[0] else None, after[1])


def _field_times(stored: Stored | None) -> dict[str, Any]:
    times = None if stored is None or stored[1] is None else orjson.loads(_raw(stored[1]))
    return times if isinstance(times, dict) else {}


def _raw(value: bytes | str) -> bytes:
    return value.encode() if isinstance(value, str) else bytes(value)  # SQLite's column default is text


def rfc3339(now: float) -> str:
    """A stamp's time, in the form ``app.ingest.events`` gives ``occurred_at`` (sortable as text)."""
    return datetime.fromtimestamp(now, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
