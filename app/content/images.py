"""Image content at open time: profile → values → content key → cached or rendered bytes, within budget.

Image renders run in worker processes behind a bound (``app.content.render_pool``), never on the event
loop; a render refused (the queue is full, or too long to finish within the budget) answers
``render-queue-full`` at once and is kept for when a render process idles, into the cache.
Output is cached by content key (the layout and the exact values drawn), so re-opens and identical
images across recipients cost nothing; concurrent requests for one key share one render. A recipient's
latest key is remembered (``app.content.shared_work``, as amp-list bodies are: concurrent opens of one
recipient's image share one lookup and render, a profile change forgets it, and work that read the
old profile is not kept): a re-open of a profile-only block within its TTL answers without touching
the store, and a late open gets that last good render instead of the static fallback. A render that
misses the budget still completes and fills the cache for the next open.

Countdowns (``serve_countdown``) share the coalescing, built in a small thread pool (their frames are
encoded in advance: a build splices bytes): their content key is the block, the whole seconds left,
the format and the scale, so a campaign-wide timer is built once per second for everyone who opens
it in that second. They have their own output cache: a running timer adds an
entry every second, which must evict older seconds, not other images.

Image renders are bounded by the render pool's admission (``app.content.render_pool``): at most
``image_render_queue`` per render process in flight or queued, none that would start too late; a
refused render's opens get the last good render or the fallback at once (``render-queue-full``) and
the render waits in a bounded backlog for an idle moment, so the next open is personal.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from functools import partial
from typing import Any, NamedTuple

from app.campaigns.loader import Campaign
from app.content.budget import Deadlines
from app.content.cache import BoundedCache
from app.content.render_pool import BACKLOG, PER_PROCESS, Rendered, Renderer, RenderPool
from app.content.shared_work import SharedWork
from app.countdown.blocks import CountdownBlock
from app.countdown.clock import CountdownError, clock_us, left_at
from app.countdown.timers import CountdownRequest, render_timer, timer_key
from app.decisions.decide import cached_names
from app.images import render
from app.images.layout import ImageBlock, ImageFormat, prepare
from app.log_throttle import ThrottledLog
from app.open_time.fetch_class import FETCH_CLASSES, FetchClass, FetchClassifier
from app.open_time.reasons import Reason

logger = logging.getLogger(__name__)

ProfileLookup = Callable[[str, float], Awaitable[tuple[dict[str, Any] | None, str | None]]]
RecentKey = tuple[str, str, str, str, int]  # campaign, block, recipient, format, scale
# Late, refused or failed opens may show the recipient's previous image (their own data, only older).
LAST_GOOD_REASONS = frozenset(
    {Reason.BUDGET_EXCEEDED, Reason.STORE_ERROR, Reason.OVERLOADED, Reason.RENDER_QUEUE_FULL}
)
# Output keyed by content is never wrong, only unused: the byte cap evicts it, not a short TTL.
OUTPUT_TTL_SECONDS = 86_400.0
# A render that failed (an error, or over max_bytes) is remembered this long, for its content key and
# for the recipient: no re-render and no traceback on every open; a profile change forgets it.
FAILED_RENDER_TTL_SECONDS = 60.0
FAILED_RENDERS = frozenset({Reason.RENDER_ERROR, Reason.TOO_LARGE})
IMAGE_FORMATS: tuple[ImageFormat, ...] = ("png", "jpg", "gif")
SCALES = (1, 2)


class Served(NamedTuple):
    body: bytes
    key: str  # content key (the ETag); the fallback's own hash for fallbacks
    fallback_reason: str | None = None


class Recent(NamedTuple):
    at: float  # when it was rendered (the clock's seconds)
    key: str  # its content key


class Timed(NamedTuple):
    """A served countdown and the whole seconds it showed left at frame 0 (None: ended, or a fallback)."""

    served: Served
    left: int | None


class ImageRequest(NamedTuple):
    campaign: str
    block: ImageBlock
    recipient: str | None  # None: a campaign-wide token, rendered with an empty profile
    fmt: ImageFormat
    scale: int
    fetch_class: FetchClass


class ImageContent:
    """Serves image blocks; ``renders``, ``render_pool`` and ``fetch_counts`` are its metrics.

    ``render_pool``: where image renders run (the server gives worker processes); without one, a
    pool of ``max_workers`` threads, for renderers that cannot cross a process boundary.
    """

    def __init__(
        self,
        profile: ProfileLookup,
        *,
        renderer: Renderer = render.draw,
        render_pool: RenderPool | None = None,
        max_workers: int = 2,
        cache_max_bytes: int = 32 * 1024 * 1024,
        timer_cache_max_bytes: int = 8 * 1024 * 1024,
        ttl_seconds: float = 300.0,
        classifier: FetchClassifier | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._profile = profile
        self._renderer = renderer
        self._pool = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="opentime-img")
        if render_pool is None:
            threads = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="opentime-img")
            limit = PER_PROCESS * max_workers
            render_pool = RenderPool(threads, workers=max_workers, limit=limit, backlog=BACKLOG)
        self.render_pool = render_pool
        self._outputs: SharedWork[str, bytes] = SharedWork(
            BoundedCache(cache_max_bytes, size_of=len), Deadlines()
        )
        # Per recipient and block: when and with which content key it was last rendered; fresh for
        # the TTL, kept a day as "last good".
        recent: BoundedCache[RecentKey, Recent | str] = BoundedCache(
            max(cache_max_bytes // 8, 1), size_of=lambda _: 64
        )
        self._recent: SharedWork[RecentKey, Recent] = SharedWork(recent, self._outputs.deadlines)
        timers: BoundedCache[str, bytes | str] = BoundedCache(timer_cache_max_bytes, size_of=len)
        self._timers: SharedWork[str, bytes] = SharedWork(timers, self._outputs.deadlines)
        self._personal_work: set[asyncio.Task[Recent | str]] = set()
        self._ttl = ttl_seconds
        self._clock = clock
        self.classifier = classifier or FetchClassifier()
        self.fetch_counts: Counter[str] = Counter(dict.fromkeys(FETCH_CLASSES, 0))
        self.renders = 0
        self._timer_threads: set[str] = set()
        # Once per block and reason a minute, never per request (and never a recipient's data).
        self._warnings = ThrottledLog(logger, interval_s=60.0)

    def classify(self, user_agent: str | None, address: str | None, issued_at: int | None) -> FetchClass:
        since = None if issued_at is None else self._clock() - issued_at
        fetch_class = self.classifier.classify(user_agent, address, since)
        self.fetch_counts[fetch_class] += 1
        return fetch_class

    async def serve(self, request: ImageRequest) -> Served:
        block = request.block
        recent_key = (request.campaign, block.name, request.recipient or "", request.fmt, request.scale)
        recent = self._recent.get(recent_key)  # campaign-wide requests (recipient "") never have one
        if isinstance(recent, str):  # only failed renders are kept as reasons: don't redo them per open
            return self._degraded(recent_key, request, recent)
        hit = None if recent is None else self._fresh(recent, block)
        if hit is not None:
            return hit
        if request.recipient is None or block.open_dependent:
            # Nothing to remember: campaign-wide, or different at every open (time, fetch class).
            rendered = await self._rendered_for(request, _deadline(block.budget_s))
        else:
            waiter, first = self._recent.join(recent_key, block.budget_s)
            if first:
                self._start(request, recent_key)
            rendered = await waiter
        body = None if isinstance(rendered, str) else self._kept(rendered.key)
        if body is None or isinstance(rendered, str):
            late = (
                rendered if isinstance(rendered, str) else Reason.BUDGET_EXCEEDED
            )  # output evicted meanwhile
            return self._degraded(recent_key, request, late)
        return Served(body, rendered.key)

    def _start(self, request: ImageRequest, recent_key: RecentKey) -> None:
        """Look up, prepare and render once for every open of this recipient's image waiting now."""
        task = asyncio.ensure_future(self._rendered_for(request, _deadline(request.block.budget_s)))
        self._personal_work.add(task)
        task.add_done_callback(partial(self._remember, recent_key))

    def _remember(self, recent_key: RecentKey, task: asyncio.Task[Recent | str]) -> None:
        self._personal_work.discard(task)
        if task.cancelled() or task.exception() is not None:
            if not task.cancelled():
                logger.error("image block %s failed", recent_key[1], exc_info=task.exception())
            self._recent.answer(recent_key, Reason.INTERNAL_ERROR, None)
            return
        rendered = task.result()
        # Late or missing data is not kept (the last good render stays, the next open tries again);
        # a failed render is, briefly.
        self._recent.answer(recent_key, rendered, _recent_ttl(rendered))

    async def _rendered_for(self, request: ImageRequest, deadline: float) -> Recent | str:
        """The recipient's values drawn into the block, or the reason they could not be (by ``deadline``)."""
        block = request.block
        profile: dict[str, Any] = {}
        if request.recipient is not None:
            found, reason = await self._profile(request.recipient, block.budget_s)
            if found is None:
                return reason or Reason.NO_DATA
            profile = found
        spec = prepare(block, self._context(profile, request.fetch_class), request.fmt, request.scale)
        for fell in spec.fell_back:
            self._warnings.warning(
                f"layer|{request.campaign}|{block.name}|{fell.layer}|{fell.problem}",
                "image block %s/%s: %s",
                request.campaign,
                block.name,
                fell.describe(),
            )
        output = self._outputs.get(spec.key)
        if isinstance(output, str):  # this content failed to render lately
            return output
        if output is None:
            left = deadline - asyncio.get_running_loop().time()
            start = partial(self.render_pool.submit, self._renderer, spec.job, left)
            later = partial(self.render_pool.defer, spec.key, self._renderer, spec.job)
            result = await self._render(
                self._outputs, spec.key, block.name, block.max_bytes, start, deadline, later
            )
            if isinstance(result, str):
                return result
        return Recent(self._clock(), spec.key)

    def serve_countdown(self, request: CountdownRequest) -> Timed | Awaitable[Timed]:
        """The countdown for the seconds left now, one build per key shared by every request for it.

        A campaign-wide timer whose second is built already (every open of it but the first in each
        second) is answered at once, without awaiting anything; otherwise the answer is awaitable.
        """
        block = request.block
        if not block.shared:
            return self._personal_countdown(request)
        left = left_at(block.deadline_us(), clock_us(self._clock()))
        key = timer_key(request, left)
        body = self._timers.get(key)
        if isinstance(body, bytes):
            return Timed(Served(body, key), left)
        return self._built(request, left, key, _deadline(block.budget_s))

    async def _personal_countdown(self, request: CountdownRequest) -> Timed:
        block = request.block
        budget_end = _deadline(block.budget_s)
        if request.recipient is None:
            return self._timer_fallback(request, Reason.NO_RECIPIENT)
        profile, reason = await self._profile(request.recipient, block.budget_s)
        if profile is None:
            return self._timer_fallback(request, reason or Reason.NO_DATA)
        try:
            deadline_us = block.deadline_us(profile)
        except CountdownError:
            return self._timer_fallback(request, Reason.NO_DEADLINE)
        left = left_at(deadline_us, clock_us(self._clock()))  # read after the look-up, which may wait
        key = timer_key(request, left)
        body = self._timers.get(key)
        if isinstance(body, bytes):
            return Timed(Served(body, key), left)
        return await self._built(request, left, key, budget_end)

    async def _built(self, request: CountdownRequest, left: int | None, key: str, budget_end: float) -> Timed:
        block = request.block
        build = partial(render_timer, block, request.fmt, request.scale, left)
        job = partial(self._in_thread, build)
        result = await self._render(self._timers, key, block.name, block.max_bytes, job, budget_end)
        if isinstance(result, str):
            return self._timer_fallback(request, result)
        return Timed(Served(result, key), left)

    def _timer_fallback(self, request: CountdownRequest, reason: str) -> Timed:
        return Timed(self.fallback(request.block, request.fmt, request.scale, reason), None)

    def fallback(
        self, block: ImageBlock | CountdownBlock, fmt: ImageFormat, scale: int, reason: str
    ) -> Served:
        body = block.fallbacks[fmt, scale]
        return Served(body, f"f-{hash_of(body)}", reason)

    def forget(self, recipient: str, campaigns: Mapping[str, Campaign]) -> None:
        """The recipient's profile changed: their next open renders from the new data."""
        for campaign in campaigns.values():
            for block in cached_names(campaign.images):
                for fmt in IMAGE_FORMATS:
                    for scale in SCALES:
                        self._recent.forget((campaign.name, block, recipient, fmt, scale))

    def forget_all(self) -> None:
        """Every recipient's next open renders from their current data (invalidations may have been
        missed); outputs are keyed by content, so they stay."""
        self._recent.forget_all()

    @property
    def renders_pending(self) -> int:
        """Renders queued or running (images and countdowns)."""
        return self._outputs.pending + self._timers.pending

    @property
    def render_threads(self) -> set[str]:
        """Names of the threads that rendered (in the worker processes: their main threads)."""
        return self._timer_threads | self.render_pool.threads

    def close(self) -> None:
        for task in self._personal_work:
            task.cancel()
        self._pool.shutdown(wait=False, cancel_futures=True)
        self.render_pool.close()

    def _fresh(self, recent: Recent, block: ImageBlock) -> Served | None:
        """The fast path: a re-open of a profile-only block within its TTL, without the store."""
        if block.open_dependent or self._clock() - recent.at > (block.cache_ttl_s or self._ttl):
            return None
        body = self._kept(recent.key)
        return None if body is None else Served(body, recent.key)

    def _render(
        self,
        outputs: SharedWork[str, bytes],
        key: str,
        name: str,
        max_bytes: int,
        start: Callable[[], asyncio.Future[bytes] | asyncio.Future[Rendered] | None],
        deadline: float,
        later: Callable[[Callable[[asyncio.Future[Rendered]], None]], None] | None = None,
    ) -> asyncio.Future[bytes | str]:
        """The render's result by ``deadline``, else "budget-exceeded"; one render per content key.

        ``start`` submits the render, or returns None when the pool refuses it (full): every waiter
        gets "render-queue-full" at once, and ``later`` keeps the render for when the pool has room.
        A render nobody waits for any more still completes and fills the output cache.
        """
        loop = asyncio.get_running_loop()
        # Rounded: Deadlines keeps one FIFO per budget value.
        waiter, first = outputs.join(key, max(round(deadline - loop.time(), 3), 0.0))
        if first:
            work = start()
            finish = partial(self._started, outputs, key, name, max_bytes)
            if work is None:
                outputs.answer(key, Reason.RENDER_QUEUE_FULL, None)  # nothing kept: the next open asks again
                if later is not None:
                    later(finish)
            else:
                finish(work)
        return waiter

    def _started(
        self,
        outputs: SharedWork[str, bytes],
        key: str,
        name: str,
        max_bytes: int,
        work: asyncio.Future[bytes] | asyncio.Future[Rendered],
    ) -> None:
        self.renders += 1
        work.add_done_callback(partial(_rendered, outputs, self._warnings, key, name, max_bytes))

    def _kept(self, key: str) -> bytes | None:
        body = self._outputs.get(key)
        return body if isinstance(body, bytes) else None  # reasons are never kept, but say so to mypy

    def _in_thread(self, build: Callable[[], bytes]) -> asyncio.Future[bytes]:
        return asyncio.get_running_loop().run_in_executor(self._pool, self._build, build)

    def _build(self, build: Callable[[], bytes]) -> bytes:
        self._timer_threads.add(threading.current_thread().name)
        return build()

    def _degraded(self, recent_key: RecentKey, request: ImageRequest, reason: str) -> Served:
        """The recipient's last good image when the data is late, else the block's static fallback."""
        if reason in LAST_GOOD_REASONS:
            recent = self._recent.get(recent_key)
            body = self._kept(recent.key) if isinstance(recent, Recent) else None
            if isinstance(recent, Recent) and body is not None:
                return Served(body, recent.key, reason)
        return self.fallback(request.block, request.fmt, request.scale, reason)

    def _context(self, profile: Mapping[str, Any], fetch_class: FetchClass) -> dict[str, Any]:
        now = datetime.fromtimestamp(self._clock(), UTC)
        return {"profile": profile, "now": now, "fetch_class": fetch_class}


def _recent_ttl(rendered: Recent | str) -> float | None:
    if isinstance(rendered, Recent):
        return OUTPUT_TTL_SECONDS
    return FAILED_RENDER_TTL_SECONDS if rendered in FAILED_RENDERS else None


def _rendered(
    outputs: SharedWork[str, bytes],
    warnings: ThrottledLog,
    key: str,
    name: str,
    max_bytes: int,
    work: asyncio.Future[bytes] | asyncio.Future[Rendered],
) -> None:
    """A render finished: keep its bytes, or (for a minute) why it failed, logged once per block a minute."""
    if work.cancelled():
        outputs.answer(key, Reason.RENDER_ERROR, None)  # shutting down: nothing to keep
        return
    error = work.exception()
    if error is not None:
        warnings.warning(f"render|{name}", "image block %s failed to render", name, exc_info=error)
        outputs.answer(key, Reason.RENDER_ERROR, FAILED_RENDER_TTL_SECONDS)
        return
    result = work.result()
    body = result.body if isinstance(result, Rendered) else result
    if len(body) > max_bytes:
        message = "image block %s: %d bytes is over its max_bytes"
        warnings.warning(f"too-large|{name}", message, name, len(body))
        outputs.answer(key, Reason.TOO_LARGE, FAILED_RENDER_TTL_SECONDS)
        return
    # Keyed by content, so never wrong: the byte cap evicts what is not asked for any more.
    outputs.answer(key, body, OUTPUT_TTL_SECONDS)


def _deadline(budget_s: float) -> float:
    return asyncio.get_running_loop().time() + budget_s


def hash_of(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()[:32]
