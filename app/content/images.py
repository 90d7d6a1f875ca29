"""Image content at open time: profile → values → content key → cached or rendered bytes, within budget.

Renders run in a small thread pool, never on the event loop (Pillow releases the GIL while encoding).
Output is cached by content key (the layout and the exact values drawn), so re-opens and identical
images across recipients cost nothing; concurrent requests for one key share one render. A recipient's
latest key is remembered (``app.content.shared_work``, as amp-list bodies are: concurrent opens of one
recipient's image share one lookup and render, a profile change forgets it, and work that read the
old profile is not kept): a re-open of a profile-only block within its TTL answers without touching
the store, and a late open gets that last good render instead of the static fallback. A render that
misses the budget still completes and fills the cache for the next open.

Countdowns (``serve_countdown``) share the pool, the output cache and the coalescing: their content key is
the block, deadline instant, time bucket, format and scale, so a campaign-wide timer renders once per
bucket for every recipient, and its output lives for two buckets (the expired image for a day).
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
from app.content.shared_work import SharedWork
from app.countdown.blocks import CountdownBlock
from app.countdown.clock import CountdownError, bucket_start
from app.countdown.timers import EXPIRED_CDN_TTL_SECONDS, CountdownRequest, render_timer, timer_key
from app.images import render
from app.images.layout import ImageBlock, ImageFormat, RenderSpec, prepare
from app.log_throttle import ThrottledLog
from app.open_time.fetch_class import FETCH_CLASSES, FetchClass, FetchClassifier
from app.open_time.reasons import Reason

logger = logging.getLogger(__name__)

ProfileLookup = Callable[[str, float], Awaitable[tuple[dict[str, Any] | None, str | None]]]
Renderer = Callable[[RenderSpec], bytes]
RecentKey = tuple[str, str, str, str, int]  # campaign, block, recipient, format, scale
# Late or failed opens may show the recipient's previous image (their own data, only older).
LAST_GOOD_REASONS = frozenset({Reason.BUDGET_EXCEEDED, Reason.STORE_ERROR})
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
    """A served countdown; ``shared_ttl``: how long a CDN may keep campaign-wide output (None: personal)."""

    served: Served
    shared_ttl: float | None


class ImageRequest(NamedTuple):
    campaign: str
    block: ImageBlock
    recipient: str | None  # None: a campaign-wide token, rendered with an empty profile
    fmt: ImageFormat
    scale: int
    fetch_class: FetchClass


class ImageContent:
    """Serves image blocks; ``renders``, ``render_threads`` and ``fetch_counts`` are its metrics."""

    def __init__(
        self,
        profile: ProfileLookup,
        *,
        renderer: Renderer = render.render,
        max_workers: int = 2,
        cache_max_bytes: int = 32 * 1024 * 1024,
        ttl_seconds: float = 300.0,
        classifier: FetchClassifier | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._profile = profile
        self._renderer = renderer
        self._pool = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="opentime-img")
        self._outputs: SharedWork[str, bytes] = SharedWork(
            BoundedCache(cache_max_bytes, size_of=len), Deadlines()
        )
        # Per recipient and block: when and with which content key it was last rendered; fresh for
        # the TTL, kept a day as "last good".
        recent: BoundedCache[RecentKey, Recent | str] = BoundedCache(
            max(cache_max_bytes // 8, 1), size_of=lambda _: 64
        )
        self._recent: SharedWork[RecentKey, Recent] = SharedWork(recent, self._outputs.deadlines)
        self._personal_work: set[asyncio.Task[Recent | str]] = set()
        self._ttl = ttl_seconds
        self._clock = clock
        self.classifier = classifier or FetchClassifier()
        self.fetch_counts: Counter[str] = Counter(dict.fromkeys(FETCH_CLASSES, 0))
        self.renders = 0
        self.render_threads: set[str] = set()
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
        hit = self._fresh(recent_key, block)
        if hit is not None:
            return hit
        failed = self._recent.get(recent_key)
        if isinstance(failed, str):  # only failed renders are kept as reasons: don't redo them per open
            return self._degraded(recent_key, request, failed)
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
            job = partial(self._renderer, spec)
            result = await self._render(spec.key, block.name, block.max_bytes, job, deadline)
            if isinstance(result, str):
                return result
        return Recent(self._clock(), spec.key)

    async def serve_countdown(self, request: CountdownRequest) -> Timed:
        """A countdown at the current time bucket: one render per key, shared by every request for it."""
        block = request.block
        budget_end = _deadline(block.budget_s)
        profile: dict[str, Any] | None = None
        if not block.shared:
            if request.recipient is None:
                return self._timer_fallback(request, Reason.NO_RECIPIENT)
            profile, reason = await self._profile(request.recipient, block.budget_s)
            if profile is None:
                return self._timer_fallback(request, reason or Reason.NO_DATA)
        try:
            deadline = block.deadline(profile)
        except CountdownError:
            return self._timer_fallback(request, Reason.NO_DEADLINE)
        now = datetime.fromtimestamp(self._clock(), UTC)
        bucket = bucket_start(now, block.bucket_seconds, deadline)
        key = timer_key(request, deadline, bucket)
        body = self._kept(key)
        if body is None:
            job = partial(render_timer, block, request.fmt, request.scale, deadline, bucket.start)
            # A bucket's render is useless once the bucket is over; the expired image lasts.
            ttl = OUTPUT_TTL_SECONDS if bucket.until is None else 2.0 * block.bucket_seconds
            result = await self._render(key, block.name, block.max_bytes, job, budget_end, ttl)
            if isinstance(result, str):
                return self._timer_fallback(request, result)
            body = result
        if not block.shared:
            return Timed(Served(body, key), None)
        until = EXPIRED_CDN_TTL_SECONDS if bucket.until is None else (bucket.until - now).total_seconds()
        return Timed(Served(body, key), until)

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
            for block in campaign.images:
                for fmt in IMAGE_FORMATS:
                    for scale in SCALES:
                        self._recent.forget((campaign.name, block, recipient, fmt, scale))

    @property
    def renders_pending(self) -> int:
        return self._outputs.pending

    def close(self) -> None:
        for task in self._personal_work:
            task.cancel()
        self._pool.shutdown(wait=False, cancel_futures=True)

    def _fresh(self, recent_key: RecentKey, block: ImageBlock) -> Served | None:
        """The fast path: a re-open of a profile-only block within its TTL, without the store."""
        if not recent_key[2] or block.open_dependent:
            return None
        recent = self._recent.get(recent_key)
        if not isinstance(recent, Recent) or self._clock() - recent.at > (block.cache_ttl_s or self._ttl):
            return None
        body = self._kept(recent.key)
        return None if body is None else Served(body, recent.key)

    def _render(
        self,
        key: str,
        name: str,
        max_bytes: int,
        job: Callable[[], bytes],
        deadline: float,
        ttl: float = OUTPUT_TTL_SECONDS,
    ) -> asyncio.Future[bytes | str]:
        """The render's result by ``deadline``, else "budget-exceeded"; one render per content key.

        A render nobody waits for any more still completes and fills the output cache.
        """
        loop = asyncio.get_running_loop()
        # Rounded: Deadlines keeps one FIFO per budget value.
        waiter, first = self._outputs.join(key, max(round(deadline - loop.time(), 3), 0.0))
        if first:
            self.renders += 1
            work = loop.run_in_executor(self._pool, self._render_in_worker, job)
            work.add_done_callback(partial(self._rendered, key, name, max_bytes, ttl))
        return waiter

    def _rendered(self, key: str, name: str, max_bytes: int, ttl: float, work: asyncio.Future[bytes]) -> None:
        if work.cancelled():
            self._outputs.answer(key, Reason.RENDER_ERROR, None)  # shutting down: nothing to keep
            return
        error = work.exception()
        if error is not None:
            message = "image block %s failed to render"
            self._warnings.warning(f"render|{name}", message, name, exc_info=error)
            self._outputs.answer(key, Reason.RENDER_ERROR, FAILED_RENDER_TTL_SECONDS)
            return
        body = work.result()
        if len(body) > max_bytes:
            message = "image block %s: %d bytes is over its max_bytes"
            self._warnings.warning(f"too-large|{name}", message, name, len(body))
            self._outputs.answer(key, Reason.TOO_LARGE, FAILED_RENDER_TTL_SECONDS)
            return
        self._outputs.answer(key, body, ttl)

    def _kept(self, key: str) -> bytes | None:
        body = self._outputs.get(key)
        return body if isinstance(body, bytes) else None  # reasons are never kept, but say so to mypy

    def _render_in_worker(self, job: Callable[[], bytes]) -> bytes:
        self.render_threads.add(threading.current_thread().name)
        return job()

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


def _deadline(budget_s: float) -> float:
    return asyncio.get_running_loop().time() + budget_s


def hash_of(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()[:32]
