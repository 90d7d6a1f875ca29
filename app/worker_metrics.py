"""``GET /metrics`` across the worker processes of one ``opentime serve``: snapshot files, merged.

Each worker counts in plain in-process counters, as with one worker: the open-time path is the same.
With ``workers > 1``, ``opentime serve`` creates a fresh folder for the run (removed at exit) and names
it to the workers in ``OPENTIME_WORKER_METRICS_DIR``. Every worker writes a snapshot of its metric
families there about once a second and when it stops (a temporary file, then a rename: a reader never
sees half a snapshot), and the worker that answers a scrape merges the other workers' snapshots with
its own live families:

- counters and histograms are summed over every snapshot, including the last one of a worker that has
  gone: uvicorn replaces a dead worker with a new process (a new file), so totals never go backwards;
  a worker killed outright loses only what it counted since its last snapshot (under a second);
- gauges are taken from live workers only (a snapshot that is not its worker's last one and at most
  ``STALE_AFTER_S`` old): the ones named in ``summed_gauges`` (memory held by each process's cache)
  are summed, every other one gets a ``worker`` label (the pid), since a sum means nothing for them.

prometheus_client's own multiprocess mode was not used: it writes a memory-mapped file under a lock on
every increment (about 1-2 µs a labelled ``inc``, against 0.15 µs for a dict increment) and cannot
express the families built from services' statistics at scrape time.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
from collections.abc import AsyncIterator, Callable, Collection, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

WORKER_METRICS_ENV = "OPENTIME_WORKER_METRICS_DIR"
PUBLISH_INTERVAL_S = 1.0
STALE_AFTER_S = 5.0  # five missed snapshots: the worker is gone or stuck, its gauges are not current
ADDITIVE = ("counter", "histogram")

logger = logging.getLogger(__name__)

Labels = tuple[tuple[str, str], ...]
SampleKey = tuple[str, Labels]  # the sample's name (``..._total``, ``..._bucket``) and its labels


@dataclass(slots=True)
class Family:
    """One metric family as plain data: what a snapshot holds and what the merge adds up."""

    name: str
    type: str  # "counter", "gauge" or "histogram"
    help: str
    samples: dict[SampleKey, float] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Snapshot:
    worker: int  # the worker's pid
    written_at: float  # wall clock, seconds
    final: bool  # written as the worker stopped
    families: Sequence[Family]

    def live(self, now: float) -> bool:
        return not self.final and now - self.written_at <= STALE_AFTER_S


def merge(
    own: Sequence[Family],
    own_worker: int,
    others: Iterable[Snapshot],
    *,
    now: float,
    summed_gauges: Collection[str],
) -> list[Family]:
    """This worker's live families merged with the other workers' snapshots (rules in the docstring)."""
    merged: dict[str, Family] = {}
    _add(merged, own, own_worker, summed_gauges, gauges=True)
    for snapshot in others:
        _add(merged, snapshot.families, snapshot.worker, summed_gauges, gauges=snapshot.live(now))
    return list(merged.values())


def _add(
    merged: dict[str, Family],
    families: Iterable[Family],
    worker: int,
    summed_gauges: Collection[str],
    *,
    gauges: bool,
) -> None:
    for family in families:
        if family.type not in ADDITIVE and not gauges:
            continue
        total = merged.get(family.name)
        if total is None:
            total = merged[family.name] = Family(family.name, family.type, family.help)
        labelled = family.type not in ADDITIVE and family.name not in summed_gauges
        for (name, labels), value in family.samples.items():
            key = (name, (*labels, ("worker", str(worker)))) if labelled else (name, labels)
            total.samples[key] = total.samples.get(key, 0.0) + value


def encode(snapshot: Snapshot) -> bytes:
    return orjson.dumps(
        {
            "worker": snapshot.worker,
            "written_at": snapshot.written_at,
            "final": snapshot.final,
            "families": [
                [f.name, f.type, f.help, [[n, labels, v] for (n, labels), v in f.samples.items()]]
                for f in snapshot.families
            ],
        }
    )


def decode(data: bytes) -> Snapshot:
    """The snapshot ``encode`` wrote; ``ValueError`` (or a ``KeyError``/``TypeError``) when it is not one."""
    raw: dict[str, Any] = orjson.loads(data)
    families = [
        Family(name, kind, text, {(sample, _labels(pairs)): float(value) for sample, pairs, value in samples})
        for name, kind, text, samples in raw["families"]
    ]
    return Snapshot(int(raw["worker"]), float(raw["written_at"]), bool(raw["final"]), families)


def _labels(pairs: list[list[str]]) -> Labels:
    return tuple((str(name), str(value)) for name, value in pairs)


class WorkerShare:
    """This worker's snapshot file in the run's folder, and reading the others' files."""

    def __init__(self, folder: Path, worker: int | None = None) -> None:
        self.folder = folder
        self.worker = os.getpid() if worker is None else worker
        # A random part too: a replacement worker that got a dead one's pid must not overwrite its totals.
        self.path = folder / f"worker-{self.worker}-{secrets.token_hex(4)}.json"

    def write(self, snapshot: Snapshot) -> None:
        temporary = self.path.with_suffix(".tmp")
        temporary.write_bytes(encode(snapshot))
        os.replace(temporary, self.path)

    def read_others(self) -> list[Snapshot]:
        snapshots = []
        for path in sorted(self.folder.glob("worker-*.json")):
            if path == self.path:
                continue  # this worker's counters are read live
            try:
                snapshots.append(decode(path.read_bytes()))
            except FileNotFoundError:
                continue  # the run is ending and the folder is being removed
            except (OSError, ValueError, KeyError, TypeError):
                logger.warning("worker metrics: skipping unreadable snapshot %s", path, exc_info=True)
        return snapshots


def folder_from_env(env: Mapping[str, str]) -> Path | None:
    """The run's snapshot folder ``opentime serve`` passed to its workers, if any."""
    value = env.get(WORKER_METRICS_ENV, "")
    return Path(value) if value else None


@asynccontextmanager
async def publishing(
    share: WorkerShare,
    take: Callable[[], Sequence[Family]],
    clock: Callable[[], float],
    interval_s: float = PUBLISH_INTERVAL_S,
) -> AsyncIterator[None]:
    """Write this worker's snapshot every ``interval_s`` while the block runs, and a last one at its end."""
    stop = asyncio.Event()
    task = asyncio.create_task(_publish_until(stop, share, take, clock, interval_s))
    try:
        yield
    finally:
        # Stopped, not cancelled: a write in flight finishes before the last one starts.
        stop.set()
        await task
        await _publish(share, Snapshot(share.worker, clock(), True, take()))


async def _publish_until(
    stop: asyncio.Event,
    share: WorkerShare,
    take: Callable[[], Sequence[Family]],
    clock: Callable[[], float],
    interval_s: float,
) -> None:
    while not stop.is_set():
        # Taken on the event loop, where the counters are bumped; written in a thread (disk I/O).
        await _publish(share, Snapshot(share.worker, clock(), False, take()))
        with suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), interval_s)


async def _publish(share: WorkerShare, snapshot: Snapshot) -> None:
    try:
        await asyncio.to_thread(share.write, snapshot)
    except OSError:
        logger.warning("worker metrics: cannot write %s", share.path, exc_info=True)
