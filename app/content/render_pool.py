"""Image renders in worker processes, behind a bound: the event loop never draws, and never queues a
render it cannot start in time.

Drawing and encoding a banner is a few milliseconds of CPU in Pillow, much of it holding the GIL:
in threads of the server process it starves the event loop (every other open waits behind it) and
uses one core. Here renders run in a ``ProcessPoolExecutor`` of ``image_render_processes`` workers
(``forkserver``: the workers fork from a small clean process that imported Pillow once, never from
the server with its threads and sockets), each given a ``RenderJob`` (plain data, a few hundred
bytes pickled) and answering the encoded bytes. Each worker ends with the server, even a killed one.

Admission: at most ``limit`` renders are in flight or queued, and none that would start too late.
One more is refused at once (``submit`` returns None, ``shed_by`` counts it by reason) so its
request gets the fallback now, instead of waiting behind renders it cannot overtake and missing its
budget anyway while holding the queue longer for the others. "Too late": the renders ahead of it
times the recent time of one render in a worker (a moving average, which grows when the CPU is
shared), over the processes, is more than the request's budget left. Under overload, opens are
either personal within their budget or answered at once, not late. A render that was admitted
always runs to its end, even when every requester got the fallback meanwhile: its bytes go into the
output cache, so the next open is personal.

A refused render is not lost either: ``defer`` keeps it in a backlog of at most ``backlog`` renders,
started only while a render process would otherwise idle (fewer renders in flight than processes),
so opens that are waiting always go first and wait behind at most one deferred render per process.
When the burst is over, the backlog drains and each recipient's next open is personal. A full
backlog drops the oldest render (``dropped`` counts them): that recipient's next open renders.

``RenderPool`` works over any ``Executor``: servers use ``RenderPool.in_processes``; tests that need
renderers which cannot cross a process (a gate, a counter) give it threads.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import select
import threading
import time
from collections import deque
from collections.abc import Callable, Hashable
from concurrent.futures import Executor, ProcessPoolExecutor
from typing import NamedTuple

from app.images.layout import RenderJob

Renderer = Callable[[RenderJob], bytes]
Done = Callable[["asyncio.Future[Rendered]"], None]  # told the future of a deferred render once it starts
# Workers import the renderer (Pillow, fonts) once in the fork server, not once per worker.
PRELOAD = ["app.images.render"]
SMOOTHING = 0.1  # weight of the latest render in the moving average of render times
SHED_REASONS = ("queue-full", "too-late")
PER_PROCESS = 32  # image_render_queue's default: renders in flight or waiting per render process
BACKLOG = 10_000  # image_render_backlog's default: refused renders kept for idle moments (~1 KB each)


class Deferred(NamedTuple):
    key: Hashable
    renderer: Renderer
    job: RenderJob
    done: Done


class Rendered(NamedTuple):
    """A finished render and where it ran (the process and thread: metrics, and tests' proof)."""

    body: bytes
    pid: int
    thread: str
    seconds: float  # wall time of the render in the worker (longer when the CPU is shared)


def run(renderer: Renderer, job: RenderJob) -> Rendered:
    """What a worker runs: module level, so a process pool can pickle a reference to it."""
    started = time.perf_counter()
    body = renderer(job)
    elapsed = time.perf_counter() - started
    return Rendered(body, os.getpid(), threading.current_thread().name, elapsed)


def exit_with(server: int) -> None:
    """Render process initializer: end this process as soon as the server process ends.

    A server that exits cleanly shuts its pool down; one that is killed (SIGKILL, the OOM killer)
    cannot, and its workers would wait forever on a queue whose writer is gone (each also keeps the
    fork server alive). A thread waits on a pidfd of the server, readable once the server is gone.
    """
    try:
        handle = os.pidfd_open(server)
    except ProcessLookupError:
        os._exit(0)

    def watch() -> None:
        select.select([handle], [], [])
        os._exit(0)

    threading.Thread(target=watch, name="opentime-exit-with-server", daemon=True).start()


def processes_for(setting: int, workers: int) -> int:
    """``image_render_processes``: 0 shares the CPUs this process may use among the server workers."""
    if setting > 0:
        return setting
    return max(1, len(os.sched_getaffinity(0)) // max(workers, 1))


class RenderPool:
    """Submits renders to an executor, at most ``limit`` in flight or queued at once."""

    def __init__(self, executor: Executor, *, workers: int, limit: int, backlog: int = 0) -> None:
        self._executor = executor
        self.workers = workers
        self.limit = limit
        self.depth = 0  # renders submitted and not finished yet
        self.peak = 0  # the largest depth seen (never above limit)
        self.shed_by = dict.fromkeys(SHED_REASONS, 0)  # renders refused, by reason
        self.render_s = 0.0  # moving average of one render's time in a worker (0: none yet)
        self.dropped = 0  # refused renders the full backlog could not keep
        self._backlog: deque[Deferred] = deque(maxlen=backlog)
        self._deferred: set[Hashable] = set()  # the keys in the backlog
        self._closed = False
        self.pids: set[int] = set()  # the processes that rendered something
        self.threads: set[str] = set()

    @classmethod
    def in_processes(cls, processes: int, *, limit: int, backlog: int = 0) -> RenderPool:
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload(PRELOAD)
        executor = ProcessPoolExecutor(
            processes, mp_context=context, initializer=exit_with, initargs=(os.getpid(),)
        )
        return cls(executor, workers=processes, limit=limit, backlog=backlog)

    @property
    def backlog(self) -> int:
        """Refused renders waiting for an idle render process."""
        return len(self._backlog)

    async def warm(self, renderer: Renderer, job: RenderJob) -> None:
        """Start every worker now, with a render each (imports, fonts), not at the first open."""
        loop = asyncio.get_running_loop()
        started = [loop.run_in_executor(self._executor, run, renderer, job) for _ in range(self.workers)]
        for rendered in await asyncio.gather(*started):
            self.pids.add(rendered.pid)

    @property
    def shed(self) -> int:
        return sum(self.shed_by.values())

    def wait_s(self) -> float:
        """About how long a render submitted now would take to finish."""
        return (self.depth + 1) * self.render_s / self.workers

    def submit(
        self, renderer: Renderer, job: RenderJob, within_s: float | None = None
    ) -> asyncio.Future[Rendered] | None:
        """The render's future, or None when ``limit`` renders are in flight or queued already, or
        when it would not finish within ``within_s`` seconds (the request's budget left)."""
        if self.depth >= self.limit:
            self.shed_by["queue-full"] += 1
            return None
        if within_s is not None and self.wait_s() > within_s:
            self.shed_by["too-late"] += 1
            return None
        return self._start(renderer, job)

    def defer(self, key: Hashable, renderer: Renderer, job: RenderJob, done: Done) -> None:
        """Render ``job`` when a render process would otherwise idle; ``done`` gets its future once
        it starts. A ``key`` (the content key) waiting already is not queued twice."""
        if self._closed or key in self._deferred:
            return
        if len(self._backlog) == self._backlog.maxlen:
            self.dropped += 1  # the oldest goes: the newest recipients are the likelier to open soon
            if self._backlog:
                self._deferred.discard(self._backlog.popleft().key)
            else:
                return
        self._backlog.append(Deferred(key, renderer, job, done))
        self._deferred.add(key)
        self._drain()

    def close(self) -> None:
        """Forget the backlog, cancel what has not started, wait for what has (milliseconds), and end
        the workers."""
        self._closed = True
        self._backlog.clear()
        self._deferred.clear()
        self._executor.shutdown(wait=True, cancel_futures=True)

    def _start(self, renderer: Renderer, job: RenderJob) -> asyncio.Future[Rendered]:
        work = asyncio.wrap_future(self._executor.submit(run, renderer, job))
        self.depth += 1
        self.peak = max(self.peak, self.depth)
        work.add_done_callback(self._finished)
        return work

    def _drain(self) -> None:
        while self._backlog and self.depth < min(self.workers, self.limit) and not self._closed:
            deferred = self._backlog.popleft()
            self._deferred.discard(deferred.key)
            deferred.done(self._start(deferred.renderer, deferred.job))

    def _finished(self, work: asyncio.Future[Rendered]) -> None:
        self.depth -= 1
        if not work.cancelled() and work.exception() is None:
            rendered = work.result()
            self.pids.add(rendered.pid)
            self.threads.add(rendered.thread)
            known = self.render_s or rendered.seconds
            self.render_s = known + SMOOTHING * (rendered.seconds - known)
        self._drain()
