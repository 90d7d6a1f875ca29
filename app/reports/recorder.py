"""``ExposureRecorder``: the ``ExposureSink`` a server runs with, a bounded buffer flushed to the store.

``record`` is on the open-time path, so it only decides whether to keep the exposure (sampling) and
appends it to a list: no await, no lock, no I/O, well under a microsecond. A full buffer drops the
exposure and counts it (``dropped``), so memory stays bounded whatever the traffic and however slow
the store. A background task (``running_recorder``, in the lifespan) flushes every
``exposure_flush_seconds`` and once more on shutdown: it adds the buffer up into hourly counters
(``ExposureCount``) and adds those to the store in one transaction, so the store holds one row per
counter, never one per open.

Sampling keeps each open with probability ``exposure_sample_rate``, and a kept open counts for
``1 / rate`` opens (its ``weight``). Clicks are always kept: they are rarer than opens and are the
numerator of every click-through rate. An exposure carries no recipient id (no personal data), so
sampling cannot keep a recipient's open and click together; weighting the opens instead keeps the
rates unbiased.

Crash safety: exposures are statistics, not acknowledged data. What is in the buffer when the process
dies (at most ``exposure_flush_seconds`` of opens) is lost. A flush the store refused is kept, added
up, and tried again with the next one (bounded like the buffer; beyond it counted as dropped).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass

from app.decisions.exposure import Exposure
from app.store.base import HOUR_S, ExposureCount, ExposureRepository, StoreError

logger = logging.getLogger(__name__)

Key = tuple[str, str, str, str, str, str, str, str, int]
ADD_UP_CHUNK = 4096  # exposures added up between two yields to the event loop (~1.5 ms)


@dataclass(slots=True)
class RecorderStats:
    recorded: int = 0  # exposures kept in the buffer
    sampled_out: int = 0  # opens left out by sampling
    dropped: int = 0  # exposures lost: the buffer (or the counters waiting for a retry) was full
    flushed_rows: int = 0  # counters added to the store
    flush_failures: int = 0  # flushes the store refused (their counters wait for the next)


class ExposureRecorder:
    """Keeps exposures in memory until ``flush`` adds them to the store."""

    def __init__(
        self,
        capacity: int,
        sample_rate: float = 1.0,
        *,
        rng: Callable[[], float] = random.random,
    ) -> None:
        if not 0 <= sample_rate <= 1:
            raise ValueError("sample_rate must be between 0 and 1")
        self.capacity = capacity
        self.sample_rate = sample_rate
        self._rng = rng
        self._buffer: list[Exposure] = []
        self._waiting: dict[Key, list[float]] = {}  # counters a failed flush left: [count, weight]
        self.stats = RecorderStats()
        self.adding = 0  # exposures a running flush has taken and not added up yet

    def record(self, exposure: Exposure) -> None:
        """Keep ``exposure`` for the next flush (or count why not). Never blocks, never raises."""
        stats = self.stats
        if exposure.event == "open" and self.sample_rate < 1 and self._rng() >= self.sample_rate:
            stats.sampled_out += 1
        elif len(self._buffer) >= self.capacity:
            stats.dropped += 1
        else:
            self._buffer.append(exposure)
            stats.recorded += 1

    @property
    def buffered(self) -> int:
        return len(self._buffer)

    async def flush(self, exposures: ExposureRepository) -> int:
        """Add what was buffered to the store; the counters written. A StoreError keeps them for the
        next flush (and is raised)."""
        taken, self._buffer = self._buffer, []
        counters = self._waiting
        self._waiting = {}
        for start in range(0, len(taken), ADD_UP_CHUNK):
            self.adding = len(taken) - start
            if start:
                await asyncio.sleep(0)  # let opens in between: 50,000 exposures take ~20 ms to add up
            add_up(counters, taken[start : start + ADD_UP_CHUNK], self.sample_rate)
        self.adding = 0
        if not counters:
            return 0
        rows = [ExposureCount(*key, int(count), weight) for key, (count, weight) in counters.items()]
        try:
            await exposures.add(rows)
        except StoreError:
            self.stats.flush_failures += 1
            self._keep_for_retry(counters)
            raise
        self.stats.flushed_rows += len(rows)
        return len(rows)

    def _keep_for_retry(self, counters: dict[Key, list[float]]) -> None:
        # Exposures recorded while the flush ran are in the new buffer; these wait beside them.
        if len(counters) > self.capacity:
            self.stats.dropped += int(sum(count for count, _ in counters.values()))
            return
        for key, (count, weight) in counters.items():
            slot = self._waiting.setdefault(key, [0.0, 0.0])
            slot[0] += count
            slot[1] += weight


def add_up(counters: dict[Key, list[float]], exposures: Iterable[Exposure], sample_rate: float) -> None:
    """Count ``exposures`` into ``counters`` by (campaign, block, variant, experiment, fetch class,
    outcome, kind, event, hour): ``[count, weight]``, a sampled open weighing ``1 / sample_rate``."""
    open_weight = 1.0 / sample_rate if sample_rate > 0 else 0.0
    for e in exposures:
        hour = int(e.at // HOUR_S) * HOUR_S
        key = (
            e.campaign,
            e.block,
            e.variant,
            e.experiment or "",
            e.fetch_class,
            e.outcome,
            e.kind,
            e.event,
            hour,
        )
        slot = counters.get(key)
        if slot is None:
            slot = counters[key] = [0.0, 0.0]
        slot[0] += 1
        slot[1] += open_weight if e.event == "open" else 1.0


async def flushing(
    recorder: ExposureRecorder, exposures: ExposureRepository, interval_s: float, stop: asyncio.Event
) -> None:
    """Flush every ``interval_s``, and once more when ``stop`` is set; failures are logged and
    counted, never fatal. Never cancelled mid-flush: a write the store was doing completes."""
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), interval_s)
        await _flush_logged(recorder, exposures)


async def _flush_logged(recorder: ExposureRecorder, exposures: ExposureRepository) -> None:
    try:
        await recorder.flush(exposures)
    except StoreError as exc:
        logger.warning("exposures not flushed (kept for the next flush): %s", exc)
    except Exception:
        recorder.stats.flush_failures += 1  # a bug must not end recording for the life of the process
        logger.exception("exposures not flushed")


@asynccontextmanager
async def running_recorder(
    recorder: ExposureRecorder, exposures: ExposureRepository, interval_s: float
) -> AsyncIterator[ExposureRecorder]:
    """While open, ``recorder`` is flushed in the background; on the way out, once more (the caller
    closes the store after this)."""
    stop = asyncio.Event()
    task = asyncio.create_task(flushing(recorder, exposures, interval_s, stop), name="opentime-exposures")
    try:
        yield recorder
    finally:
        stop.set()
        await task
