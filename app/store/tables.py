"""Every stored table and its columns, the same in every backend: what ``opentime db copy`` moves.

The first column is the table's key: copies page through a table in key order (``after`` the last
key seen), so a copy reads each row once however large the table is.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

TABLES: dict[str, tuple[str, ...]] = {
    "profiles": ("recipient_id", "attributes", "field_times", "version", "updated_at"),
    "events": ("id", "recipient", "type", "occurred_at", "received_at"),
    "form_submissions": ("submission_id", "campaign", "block", "recipient_id", "payload", "created_at"),
    "api_keys": ("key_id", "name", "secret_hash", "scopes", "created_at", "revoked_at"),
    # The erasure records and the key they are hashed with travel together, or the records of the
    # copy could no longer be checked against an id.
    "erasures": ("erasure_id", "id_hash", "erased_at", "requested_by", "profiles", "events", "form_answers"),
    "store_secrets": ("name", "secret"),
    # Exposure counters (reports); ``bucket`` is ``ExposureCount.key``.
    "exposures": (
        "bucket",
        "campaign",
        "block",
        "variant",
        "experiment",
        "fetch_class",
        "outcome",
        "kind",
        "event",
        "hour",
        "recorded",
        "weight",
    ),
}
_BYTES = frozenset({"attributes", "field_times", "payload", "secret_hash", "id_hash", "secret"})
Row = tuple[Any, ...]


class TableTransfer(Protocol):
    """Whole-table reads and writes, for copying a store into another (not for the app's own use)."""

    async def count(self, table: str) -> int: ...

    async def read(self, table: str, after: str | None, limit: int) -> list[Row]:
        """Up to ``limit`` rows whose key is greater than ``after`` (from the start: None), in key order,
        with ``TABLES[table]``'s columns; byte columns as bytes."""
        ...

    async def write(self, table: str, rows: Sequence[Row]) -> None:
        """Store ``rows`` in one transaction; a row whose key is already there is replaced."""
        ...


def check_table(table: str) -> tuple[str, ...]:
    """The table's columns; ValueError for a name that is not one of ours (names go into SQL text)."""
    if table not in TABLES:
        raise ValueError(f"unknown table {table!r}")
    return TABLES[table]


def as_bytes(table: str, rows: Sequence[Row]) -> list[Row]:
    """``rows`` with every byte column as bytes (SQLite may hand back text, e.g. a column default)."""
    positions = [i for i, column in enumerate(TABLES[table]) if column in _BYTES]
    return [
        tuple(
            value.encode() if i in positions and isinstance(value, str) else value
            for i, value in enumerate(row)
        )
        for row in rows
    ]
