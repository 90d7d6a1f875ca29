"""SQL for exposure counters: ``SQLiteExposures`` is the ``ExposureRepository`` of a SQLite store.

A flush adds its counts to the stored ones (``count = count + excluded.count``) in one write
transaction on the writer thread, so a flush is never half applied.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

from app.store.base import ExposureCount

if TYPE_CHECKING:
    import sqlite3

    from app.store.sqlite.profiles import SQLiteProfileStore

_ADD = """
INSERT INTO exposures
    (bucket, campaign, block, variant, experiment, fetch_class, outcome, kind, event, hour, recorded, weight)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (bucket) DO UPDATE SET
    recorded = exposures.recorded + excluded.recorded, weight = exposures.weight + excluded.weight
"""
_READ = """
SELECT campaign, block, variant, experiment, fetch_class, outcome, kind, event, hour, recorded, weight
FROM exposures WHERE campaign = ? AND hour >= ? AND hour < ? ORDER BY bucket
"""
# Bounds for "no bound": hours are Unix times, far inside these.
LOWEST = -(2**62)
HIGHEST = 2**62


class SQLiteExposures:
    def __init__(self, store: SQLiteProfileStore) -> None:
        self._store = store

    async def add(self, counts: Sequence[ExposureCount]) -> None:
        if not counts:
            return
        rows = [(c.key, *c) for c in counts]
        await self._store.run_write(lambda conn: _add(conn, rows))

    async def read(self, campaign: str, since: float | None, until: float | None) -> list[ExposureCount]:
        args = (campaign, _bound(since, LOWEST), _bound(until, HIGHEST))
        rows = await self._store.run_read(lambda conn: conn.execute(_READ, args).fetchall())
        return [ExposureCount(*row) for row in rows]


def _add(conn: sqlite3.Connection, rows: Sequence[tuple[object, ...]]) -> None:
    conn.executemany(_ADD, rows)


def _bound(at: float | None, default: int) -> int:
    # Hours are whole seconds: "at or after 10:30" starts with the 11:00 hour, "before 10:30" ends with 10:00.
    return default if at is None else math.ceil(at)
