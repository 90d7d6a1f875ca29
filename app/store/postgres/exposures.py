"""Exposure counters in PostgreSQL: ``PostgresExposures`` is the ``ExposureRepository``.

A flush adds its counts to the stored ones in one transaction. Nodes flush the same counters at the
same time, so each flush takes its row locks in key order (no lock cycle between two flushes), and a
deadlock the server breaks anyway is run again (``run_transaction``).
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from typing import TYPE_CHECKING

from app.store.base import ExposureCount

if TYPE_CHECKING:
    import asyncpg

    from app.store.postgres.store import PostgresStore

_ADD = """
INSERT INTO exposures
    (bucket, campaign, block, variant, experiment, fetch_class, outcome, kind, event, hour, recorded, weight)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
ON CONFLICT (bucket) DO UPDATE SET
    recorded = exposures.recorded + excluded.recorded, weight = exposures.weight + excluded.weight
"""
_READ = """
SELECT campaign, block, variant, experiment, fetch_class, outcome, kind, event, hour, recorded, weight
FROM exposures WHERE campaign = $1 AND hour >= $2 AND hour < $3 ORDER BY bucket COLLATE "C"
"""
LOWEST = -(2**62)
HIGHEST = 2**62


class PostgresExposures:
    def __init__(self, store: PostgresStore) -> None:
        self._store = store

    async def add(self, counts: Sequence[ExposureCount]) -> None:
        if not counts:
            return
        rows = sorted((c.key, *c) for c in counts)
        await self._store.run_transaction(partial(_add, rows))

    async def read(self, campaign: str, since: float | None, until: float | None) -> list[ExposureCount]:
        low = LOWEST if since is None else since
        high = HIGHEST if until is None else until
        async with self._store.connection() as conn:
            rows = await conn.fetch(_READ, campaign, low, high)
        # hour is a double (compared with the float times retention and reports give): whole seconds.
        return [_count(row) for row in rows]


async def _add(rows: Sequence[tuple[object, ...]], conn: asyncpg.Connection) -> None:
    await conn.executemany(_ADD, rows)


def _count(row: asyncpg.Record) -> ExposureCount:
    campaign, block, variant, experiment, fetch_class, outcome, kind, event, hour, recorded, weight = row
    return ExposureCount(
        campaign, block, variant, experiment, fetch_class, outcome, kind, event, int(hour), recorded, weight
    )
