"""The retention limit: events, form answers and exposure counters older than ``retention_days`` go.

A server runs ``Retention`` in the background (from its lifespan) when ``retention_days`` is above
0: a pass at start-up, then one every ``retention_interval_seconds``. Each pass first claims the
period in the store (``PrivacyRepository.claim``: SQLite's write lock, PostgreSQL's advisory lock),
so among the processes and nodes sharing a store exactly one does the work per period; the others
skip it. It deletes in batches of ``BATCH_ROWS``, each a short transaction of its own, so webhook
commits and erasures are never held behind a long delete. ``opentime retention run`` is the same
pass for cron users (it does not wait for the period).

Profiles are not aged out: a profile is the recipient's current data, which open-time answers need;
an erasure request removes it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from app.store.base import RETENTION_TABLES, PrivacyRepository, RetentionTable, StoreError

logger = logging.getLogger(__name__)

TASK = "retention"
BATCH_ROWS = 1000
DAY_S = 86400.0
# A claim is refused this share of an interval after the last: ticks of different nodes drift.
CLAIM_SHARE = 0.9


@dataclass(slots=True)
class RetentionStats:
    deleted: dict[str, int] = field(default_factory=lambda: dict.fromkeys(RETENTION_TABLES, 0))
    runs: int = 0  # passes this process did
    skipped: int = 0  # periods another process (or node) had claimed
    failures: int = 0  # passes the store failed
    last_run: float = 0.0  # when this process last finished a pass (0: never)


async def expire_old(
    privacy: PrivacyRepository,
    days: int,
    now: float,
    *,
    batch: int = BATCH_ROWS,
    deleted: Callable[[RetentionTable, int], None] | None = None,
) -> dict[RetentionTable, int]:
    """Delete every event, form answer and exposure counter (by the end of its hour) stored more than
    ``days`` days before ``now``, in batches;
    rows deleted per table. ``deleted`` is told after each batch (progress)."""
    before = now - days * DAY_S
    counts: dict[RetentionTable, int] = dict.fromkeys(RETENTION_TABLES, 0)
    for table in RETENTION_TABLES:
        while True:
            done = await privacy.expire(table, before, batch)
            counts[table] += done
            if deleted is not None:
                deleted(table, done)
            if done < batch:
                break
            await asyncio.sleep(0)  # let the requests waiting on this loop in between batches
    return counts


class Retention:
    """The periodic pass of one server process."""

    def __init__(
        self,
        privacy: PrivacyRepository,
        days: int,
        interval_s: float,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._privacy = privacy
        self.days = days
        self.interval_s = interval_s
        self._clock = clock
        self.stats = RetentionStats()

    async def run_once(self) -> dict[RetentionTable, int] | None:
        """One pass, if this process wins the period's claim; None when another one has it."""
        if not await self._privacy.claim(TASK, self._clock(), self.interval_s * CLAIM_SHARE):
            self.stats.skipped += 1
            return None
        counts = await expire_old(self._privacy, self.days, self._clock(), deleted=self._count)
        self.stats.runs += 1
        self.stats.last_run = self._clock()
        logger.info(
            "retention (%d days): deleted %d event id(s), %d form answer(s), %d exposure counter(s)",
            self.days,
            counts["events"],
            counts["form_submissions"],
            counts["exposures"],
        )
        return counts

    def _count(self, table: RetentionTable, done: int) -> None:
        self.stats.deleted[table] += done  # as it goes: a pass that fails half-way still counts

    async def forever(self) -> None:
        while True:
            try:
                await self.run_once()
            except StoreError as exc:
                self.stats.failures += 1
                logger.warning("retention pass failed, tried again in %gs: %s", self.interval_s, exc)
            except Exception:
                self.stats.failures += 1  # a bug must not end retention for the life of the process
                logger.exception("retention pass failed, tried again in %gs", self.interval_s)
            await asyncio.sleep(self.interval_s)


@asynccontextmanager
async def running_retention(retention: Retention) -> AsyncIterator[None]:
    """While open, ``retention`` runs in the background (when its ``days`` is above 0)."""
    if retention.days <= 0:
        yield
        return
    task = asyncio.create_task(retention.forever(), name="opentime-retention")
    try:
        yield
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
