"""The resources one server process owns, created in the app's lifespan and passed via state."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

from app.campaigns.loader import EMAIL_PARTS, Campaign, load_campaigns
from app.campaigns.sendtime import SendTime
from app.config import FIELDS, Settings, event_rules
from app.content.cache import BoundedCache
from app.content.cache_policy import CachePolicy
from app.content.images import ImageContent
from app.content.invalidation import Invalidation, LocalInvalidation
from app.content.lists import Entry, Key, ListContent, entry_size
from app.content.profiles import ProfileLoader
from app.content.render_pool import RenderPool, processes_for
from app.decisions.clicks import ClickMemory
from app.decisions.exposure import ExposureSink, NullSink
from app.images import render
from app.images.layout import Drawing, RenderJob
from app.images.render import WHITE
from app.ingest.background import ServerIngest, amqp_source, running_ingest
from app.ingest.events import RULES, Rule
from app.ingest.writer import EventWriter
from app.limits.limiter import RateLimiter
from app.metrics import OpenStats
from app.privacy.erasure import Eraser
from app.privacy.retention import Retention, running_retention
from app.render.templates import Templates
from app.reports.recorder import ExposureRecorder, running_recorder
from app.security.apikeys import ApiKeyCache
from app.security.keyring import load_keyring
from app.security.tokens import TokenSigner, TokenVerifier
from app.security.webhook_auth import ReplayGuard, RequestMemory
from app.shared.config import redis_config
from app.store import open_store
from app.store.base import Store
from app.upstream.client import OAuth2ClientCredentials, StaticHeaderAuth, UpstreamClient, UpstreamConfig
from app.worker_metrics import WorkerShare

if TYPE_CHECKING:
    from app.shared.tier import SharedTier


@dataclass(frozen=True, slots=True)
class Services:
    settings: Settings
    verifier: TokenVerifier
    signer: TokenSigner
    campaigns: Mapping[str, Campaign]
    store: Store  # its repositories: profiles, events, forms, api_keys
    lists: ListContent
    templates: Templates
    sendtime: SendTime
    api_key_cache: ApiKeyCache
    clock: Callable[[], float]
    events: EventWriter  # webhook events: group commit, then cache invalidation
    invalidation: Invalidation  # every writer of profiles announces the recipients it changed
    replay_guard: RequestMemory  # this process's ReplayGuard, or the one shared through Redis
    images: ImageContent
    cache_policy: CachePolicy
    open_stats: OpenStats  # counted on the open-time path, read by GET /metrics
    eraser: Eraser  # erasure requests: the store, then every cache of every node
    retention: Retention  # the retention pass (running in the background when retention_days > 0)
    upstream: UpstreamClient | None = None
    event_rules: Mapping[str, Rule] = field(default_factory=lambda: dict(RULES))  # built-in + custom
    worker_share: WorkerShare | None = None  # one of several workers: GET /metrics adds them all up
    shared: SharedTier | None = None  # the Redis shared tier (redis_url set): for /readyz and /metrics
    ingest: ServerIngest | None = None  # the stream consumer (ingest_url set): for /readyz and /metrics
    # Webhook bodies being read: a header that looks signed gets its body read before the signature
    # can be checked, so this bounds the memory such requests hold (webhook_concurrent_bodies).
    webhook_bodies: asyncio.Semaphore = field(default_factory=asyncio.Semaphore)
    # Rate limits of /api, /webhooks and the preview (app.limits), shared through Redis with redis_url.
    limits: RateLimiter = field(default_factory=lambda: RateLimiter({}))
    # Open-time decisions: each answered open and click is offered to ``exposures`` (the reports'
    # recorder; by default nothing records), and what an open showed is kept for its clicks.
    exposures: ExposureSink = field(default_factory=NullSink)
    clicks: ClickMemory = field(default_factory=lambda: ClickMemory(10_000, 3600.0, time.time))


def load_campaigns_for(settings: Settings) -> dict[str, Campaign]:
    return load_campaigns(
        settings.templates_dir,
        settings.static_dir,
        default_budget_ms=settings.default_budget_ms,
        public_base_url=settings.public_base_url,
    )


def load_templates(settings: Settings, campaigns: Mapping[str, Campaign]) -> Templates:
    """Compile every campaign template now, so a syntax error stops start-up with file and line."""
    templates = Templates(settings.templates_dir)
    for campaign in campaigns.values():
        names = [campaign.template(part) for part in EMAIL_PARTS] if campaign.has_email else []
        fragments = sorted(campaign.fragments | campaign.fragment_variants)
        names += [campaign.template(f"fragments/{block}.html") for block in fragments]
        for name in names:
            templates.check(name)
    return templates


@asynccontextmanager
async def running_services(
    settings: Settings, *, clock: Callable[[], float] = time.time, worker_metrics_dir: Path | None = None
) -> AsyncIterator[Services]:
    """Open everything a server process needs; close it all on the way out.

    ``worker_metrics_dir``: this run's folder of worker metric snapshots (``app.worker_metrics``),
    given when ``opentime serve`` runs several workers.
    """
    ring = load_keyring(settings.keys_file)
    rules = event_rules(settings)
    campaigns = load_campaigns_for(settings)
    templates = load_templates(settings, campaigns)
    signer = TokenSigner(ring, default_ttl_seconds=settings.token_ttl_days * 86400)
    store = open_store(
        settings.database_url,
        create=settings.create_database,
        timeout_ms=settings.database_timeout_ms,
        pool_size=settings.database_pool_size,
    )
    await store.open()
    store.profiles.max_pending = settings.max_pending_store_reads
    config = upstream_config(settings)
    # One clock for the upstream too, so its fetch times compare with profiles' updated_at (data age).
    upstream = None if config is None else UpstreamClient(config, clock=clock)
    shared_config = redis_config(settings)
    tolerance = settings.webhook_tolerance_seconds
    shared = None
    if shared_config is not None:
        # Imported here: a process without Redis never loads redis, aiocache or hiredis.
        from app.shared.tier import open_shared

        shared = open_shared(shared_config, store.profiles, tolerance)
    cache: BoundedCache[Key, Entry] = BoundedCache(settings.cache_max_bytes, size_of=entry_size)
    lists = ListContent(
        ProfileLoader(store.profiles if shared is None else shared.profiles, upstream, clock=clock),
        cache,
        ttl_seconds=settings.cache_ttl_seconds,
        negative_ttl_seconds=settings.negative_ttl_seconds,
        upstream_ttl_seconds=settings.upstream_fresh_ttl_seconds,
    )
    images = ImageContent(
        lists.profile,
        render_pool=await started_render_pool(settings, campaigns),
        cache_max_bytes=settings.image_cache_max_bytes,
        ttl_seconds=settings.cache_ttl_seconds,
        clock=clock,
    )
    invalidation: Invalidation = LocalInvalidation() if shared is None else shared.invalidation
    invalidation.subscribe(partial(_forget, lists, images, upstream, campaigns))
    if shared is not None:
        shared.invalidation.on_reset(partial(_forget_all, lists, images, upstream))
        shared.invalidation.start()
    events = EventWriter(store.events, clock=clock, invalidation=invalidation)
    clicks = ClickMemory(
        settings.click_memory_entries,
        settings.click_memory_seconds,
        clock,
        None if shared is None else shared.redis,
    )
    retention = Retention(
        store.privacy, settings.retention_days, settings.retention_interval_seconds, clock=clock
    )
    background = AsyncExitStack()  # stopped first on the way out, while the store is still open
    try:
        ingest = await background.enter_async_context(streaming(settings, events, rules, clock))
        await background.enter_async_context(running_retention(retention))
        recorder = ExposureRecorder(settings.exposure_buffer, settings.exposure_sample_rate)
        await background.enter_async_context(
            running_recorder(recorder, store.exposures, settings.exposure_flush_seconds)
        )
        yield Services(
            settings=settings,
            verifier=TokenVerifier(ring),
            signer=signer,
            campaigns=campaigns,
            store=store,
            lists=lists,
            templates=templates,
            sendtime=SendTime(templates, campaigns, signer, settings.public_base_url, clock),
            api_key_cache=ApiKeyCache(),
            clock=clock,
            events=events,
            invalidation=invalidation,
            replay_guard=ReplayGuard(tolerance) if shared is None else shared.replay_guard,
            images=images,
            cache_policy=CachePolicy.for_ring(ring),
            open_stats=OpenStats(),
            eraser=Eraser(store.privacy, invalidation, clock=clock),
            retention=retention,
            upstream=upstream,
            event_rules=rules,
            worker_share=None if worker_metrics_dir is None else WorkerShare(worker_metrics_dir),
            shared=shared,
            ingest=ingest,
            webhook_bodies=asyncio.Semaphore(settings.webhook_concurrent_bodies),
            limits=rate_limiter(settings, shared),
            exposures=recorder,
            clicks=clicks,
        )
    finally:
        await background.aclose()
        await clicks.aclose()
        if shared is not None:
            await shared.aclose()
        images.close()
        await lists.aclose()
        if upstream is not None:
            await upstream.aclose()
        await store.close()


async def started_render_pool(settings: Settings, campaigns: Mapping[str, Campaign]) -> RenderPool:
    """Image render worker processes, started now: each has drawn an image once (imports, fonts)."""
    processes = processes_for(settings.image_render_processes, settings.workers)
    limit, backlog = settings.image_render_queue * processes, settings.image_render_backlog
    pool = RenderPool.in_processes(processes, limit=limit, backlog=backlog)
    blocks = [block for campaign in campaigns.values() for block in campaign.images.values()]
    drawing = blocks[0].drawing if blocks else Drawing(1, 1, (255, 255, 255, 255), None, 0, WHITE, ())
    values = tuple(None for _ in drawing.layers)  # the background only: no recipient's data
    try:
        await pool.warm(render.draw, RenderJob(drawing, "png", 1, values))
    except BaseException:
        pool.close()
        raise
    return pool


@asynccontextmanager
async def streaming(
    settings: Settings, events: EventWriter, rules: Mapping[str, Rule], clock: Callable[[], float]
) -> AsyncIterator[ServerIngest | None]:
    """With ``ingest_url``, the stream consumer runs (in the background) while the block does."""
    if not settings.ingest_url:
        yield None
        return
    source = amqp_source(settings.ingest_url, settings.ingest_queue, settings.ingest_prefetch)
    async with running_ingest(
        source,
        settings.ingest_queue,
        events,
        rules=rules,
        max_body_bytes=settings.webhook_max_body_bytes,
        clock=clock,
    ) as ingest:
        yield ingest


def rate_limiter(settings: Settings, shared: SharedTier | None) -> RateLimiter:
    rates = {
        "api": settings.rate_limit_api,
        "webhooks": settings.rate_limit_webhooks,
        "preview": settings.rate_limit_preview,
    }
    return RateLimiter(rates, shared=None if shared is None else shared.limits)


def upstream_config(settings: Settings) -> UpstreamConfig | None:
    """The upstream client's configuration, or None when no upstream is configured.

    Timeouts, retries and TTLs come from the settings that say which argument they feed (``About.upstream``
    in ``app.config``), so neither this function nor ``UpstreamConfig`` restates them.
    """
    if not settings.upstream_url:
        return None
    tunables = {row.upstream: getattr(settings, row.name) for row in FIELDS if row.upstream}
    return UpstreamConfig(settings.upstream_url, upstream_auth(settings), **tunables)


def upstream_auth(settings: Settings) -> StaticHeaderAuth | OAuth2ClientCredentials | None:
    if settings.upstream_auth_header:
        return StaticHeaderAuth(settings.upstream_auth_header, settings.upstream_auth_value)
    if settings.upstream_token_url:
        return OAuth2ClientCredentials(
            settings.upstream_token_url,
            settings.upstream_client_id,
            settings.upstream_client_secret,
            settings.upstream_scope or None,
        )
    return None


def _forget(
    lists: ListContent,
    images: ImageContent,
    upstream: UpstreamClient | None,
    campaigns: Mapping[str, Campaign],
    recipients: Iterable[str],
) -> None:
    """Invalidation listener: drop what this process cached from the recipients' old data."""
    for recipient in recipients:
        lists.forget(recipient, campaigns)
        images.forget(recipient, campaigns)
        if upstream is not None:
            upstream.discard(recipient)


def _forget_all(lists: ListContent, images: ImageContent, upstream: UpstreamClient | None) -> None:
    """Reset listener (Redis): this process may have missed invalidations, so drop what it cached."""
    lists.forget_all()
    images.forget_all()
    if upstream is not None:
        upstream.discard_all()
