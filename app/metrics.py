"""``GET /metrics`` in the Prometheus text format; the only module that imports ``prometheus_client``.

The open-time path only bumps plain counters in ``OpenStats`` (a dict increment and two bucket
searches, well under a microsecond; ``app.counting``); the Prometheus families are built from those
counters and the services' own statistics (caches, images, upstream breaker) when the endpoint is
scraped, never per request.

Families::

    opentime_open_responses_total{kind,outcome}   open-time responses; outcome "ok" or the fallback reason
    opentime_data_age_seconds{kind}                histogram: age of the profile data a response used
    opentime_open_duration_seconds{kind}           histogram: arrival to answer ready, waiting included
    opentime_open_budget_seconds                   the largest block budget (what p99 should stay under)
    opentime_cache_{hits,misses,evictions}_total{cache}, opentime_cache_{bytes,entries}{cache}
                                                   (gauges: across workers, summed)
    opentime_image_fetches_total{fetch_class}, opentime_image_renders_total
    opentime_image_renders_shed_total{reason}      renders refused at once: queue-full (image_render_queue
                                                   waiting) or too-late (would not finish in the budget)
    opentime_image_renders_dropped_total           refused renders the full backlog could not keep
    opentime_image_render_backlog                  (gauge) refused renders waiting for an idle process
    opentime_image_render_queue, opentime_image_render_queue_limit, opentime_image_render_processes
                                                   (gauges) renders in flight or waiting, their bound,
                                                   and the render worker processes
    opentime_upstream_breaker_state{state}         1 for the breaker's current state (upstream configured)
    opentime_upstream_breaker_failures             consecutive upstream failures
                                                   (gauges: across workers, one per worker, label worker)
    opentime_store_read_batches_total, opentime_store_read_keys_total
                                                   profile queries and the recipient ids they asked for
    opentime_store_problem{reason}                 1 when the SQLite file was deleted, replaced, corrupted
    opentime_events_committed_total{status}, opentime_events_failed_total, opentime_events_rejected_total
    opentime_events_queued, opentime_events_oldest_queued_seconds   (the group commit's backlog)
    opentime_event_delay_seconds                   histogram: applied events, occurred_at to durable
    opentime_rate_limited_total{scope}             requests answered 429 (api, webhooks, preview)
    opentime_rate_limit_local_only_total{scope}    limits decided by this process: Redis did not answer
    opentime_work_shed_total{queue,reason}         work not queued (full) or dropped (abandoned): queues
    opentime_work_depth{queue}, opentime_work_limit{queue}   store_reads, renders, upstream_fetches
    opentime_redis_*                               the Redis shared tier, with redis_url (``_redis_families``)
    opentime_ingest_*                              stream ingest, with ingest_url (``_ingest_families``)
    opentime_erasures_total, opentime_retention_*  privacy requests and the retention limit
                                                   (``_privacy_families``)
    opentime_exposures_{recorded,sampled_out,dropped,flushed_rows,flush_failures}_total,
    opentime_exposures_buffered                    what opens and clicks showed, for reports
                                                   (``_exposure_families``)

With several worker processes (``opentime serve`` with ``workers > 1``), the worker that answers a
scrape adds up every worker's families: see ``app.worker_metrics`` for how.
"""

from __future__ import annotations

from bisect import bisect_left
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from contextlib import AbstractAsyncContextManager, nullcontext
from functools import partial
from typing import TYPE_CHECKING, NamedTuple, get_args

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.core import (
    CollectorRegistry,
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from app.content.cache import CacheStats
from app.counting import AGE_BUCKETS, Histogram
from app.reports.recorder import ExposureRecorder
from app.store.base import EventStatus
from app.upstream.breaker import BreakerState
from app.worker_metrics import Family, Snapshot, merge, publishing

if TYPE_CHECKING:
    from app.campaigns.loader import Campaign
    from app.ingest.background import ServerIngest
    from app.ingest.writer import EventWriter
    from app.services import Services
    from app.shared.tier import SharedTier

CONTENT_TYPE = CONTENT_TYPE_LATEST
# Gauges that add up across worker processes (memory each one holds); the others are shown per worker.
SUMMED_GAUGES = frozenset({"opentime_cache_bytes", "opentime_cache_entries"})
# Seconds an open took: a cache hit (well under a millisecond) to past any budget (blocks allow 10 s at
# most); dense around the budgets blocks use (150 ms by default, 300-500 ms for images).
DURATION_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1.0, 2.5, 10.0)
FIRST_DURATION, FIRST_AGE = DURATION_BUCKETS[0], AGE_BUCKETS[0]  # bisect_left's 0: value <= the first bound


class AgeHistogram(Histogram):
    """Ages of the data a response used, in ``AGE_BUCKETS``."""

    __slots__ = ()

    def __init__(self) -> None:
        super().__init__(AGE_BUCKETS)


class OpenStats:
    """What the open-time pipeline counts, per kind: outcomes by fallback reason, data ages and how long
    the answer took (from the request's arrival to its answer being ready, waiting included).

    ``served`` runs for every open, so it is written for CPython's interpreter (callgrind: ~8,500
    instructions per call as a ``Counter`` keyed by (kind, reason) and two ``observe`` calls, ~3,000
    now): one record per kind, plain dicts (a ``Counter``'s item assignment goes through a Python-level
    slot), and the histograms' buckets found inline, the first bucket (most durations) without a bisect.
    """

    def __init__(self) -> None:
        self._kinds: dict[str, _KindCounts] = {}

    def served(self, kind: str, reason: str | None, age: float | None, duration: float) -> None:
        counts = self._kinds.get(kind)
        if counts is None:
            counts = self._kinds[kind] = _KindCounts()
        outcomes = counts.outcomes
        outcomes[reason] = outcomes.get(reason, 0) + 1
        if age is not None:
            ages = counts.age
            if ages is None:
                ages = counts.age = AgeHistogram()
            ages.counts[0 if age <= FIRST_AGE else bisect_left(AGE_BUCKETS, age)] += 1
            ages.sum += age
        timing = counts.duration
        timing.counts[0 if duration <= FIRST_DURATION else bisect_left(DURATION_BUCKETS, duration)] += 1
        timing.sum += duration

    @property
    def outcomes(self) -> Counter[tuple[str, str | None]]:
        """Responses by (kind, reason); reason None: served with the recipient's data."""
        kinds = self._kinds.items()
        return Counter({(kind, reason): n for kind, counts in kinds for reason, n in counts.outcomes.items()})

    @property
    def data_age(self) -> dict[str, AgeHistogram]:
        return {kind: counts.age for kind, counts in self._kinds.items() if counts.age is not None}

    @property
    def duration(self) -> dict[str, Histogram]:
        return {kind: counts.duration for kind, counts in self._kinds.items()}


class _KindCounts:
    __slots__ = ("age", "duration", "outcomes")

    def __init__(self) -> None:
        self.outcomes: dict[str | None, int] = {}
        self.age: AgeHistogram | None = None
        self.duration = Histogram(DURATION_BUCKETS)


class _ServicesCollector(Collector):
    def __init__(self, services: Services) -> None:
        self._services = services

    def collect(self) -> Iterator[Metric]:
        services = self._services
        stats = services.open_stats
        outcomes = CounterMetricFamily(
            "opentime_open_responses", "Open-time responses by outcome.", labels=("kind", "outcome")
        )
        for (kind, reason), count in sorted(stats.outcomes.items(), key=lambda i: (i[0][0], i[0][1] or "")):
            outcomes.add_metric((kind, reason or "ok"), count)
        yield outcomes
        age = HistogramMetricFamily(
            "opentime_data_age_seconds", "Age of the profile data a response used.", labels=["kind"]
        )
        for kind, histogram in sorted(stats.data_age.items()):
            age.add_metric([kind], histogram.buckets(), histogram.sum)
        yield age
        yield from _duration_families(services)
        lists = services.lists.cache
        caches = [_CacheView("lists", lists.stats, lists.bytes, len(lists))]
        profiles = services.lists.profile_cache
        if profiles is not None:
            caches.append(_CacheView("profiles", profiles.stats, profiles.bytes, len(profiles)))
        if services.upstream is not None:
            caches.append(_CacheView("upstream", services.upstream.cache_stats))
        yield from _cache_families(caches)
        reads = services.store.profiles.read_stats
        yield CounterMetricFamily(
            "opentime_store_read_batches", "Profile store queries.", value=reads.batches
        )
        yield CounterMetricFamily(
            "opentime_store_read_keys", "Recipient ids asked for by profile store queries.", value=reads.keys
        )
        problem = GaugeMetricFamily(
            "opentime_store_problem",
            "1 when the store refuses everything until a restart (its SQLite file deleted, replaced or"
            " corrupt), by reason.",
            labels=["reason"],
        )
        for reason in ("deleted", "replaced", "corrupt"):
            problem.add_metric([reason], 1 if services.store.problem == reason else 0)
        yield problem
        yield from _event_families(services.events, services.clock())
        yield from _image_families(services)
        yield from _limit_families(services)
        yield from _privacy_families(services)
        yield from _exposure_families(services)
        yield from _work_families(services)
        if services.upstream is not None:
            yield from _breaker_families(services)
        if services.shared is not None:
            yield from _redis_families(services.shared)
        if services.ingest is not None:
            yield from _ingest_families(services.ingest)


class _CacheView(NamedTuple):
    name: str
    stats: CacheStats
    bytes: int | None = None
    entries: int | None = None


def _cache_families(caches: list[_CacheView]) -> Iterator[Metric]:
    names = ("hits", "misses", "evictions")
    counters = {n: CounterMetricFamily(f"opentime_cache_{n}", f"Cache {n}.", labels=["cache"]) for n in names}
    size = GaugeMetricFamily("opentime_cache_bytes", "Bytes held by the cache.", labels=["cache"])
    entries = GaugeMetricFamily("opentime_cache_entries", "Entries held by the cache.", labels=["cache"])
    for cache in caches:
        for stat in names:
            counters[stat].add_metric([cache.name], getattr(cache.stats, stat))
        if cache.bytes is not None and cache.entries is not None:
            size.add_metric([cache.name], cache.bytes)
            entries.add_metric([cache.name], cache.entries)
    yield from counters.values()
    yield size
    yield entries


def _duration_families(services: Services) -> Iterator[Metric]:
    duration = HistogramMetricFamily(
        "opentime_open_duration_seconds",
        "Seconds from an open-time request's arrival to its answer being ready.",
        labels=["kind"],
    )
    for kind, histogram in sorted(services.open_stats.duration.items()):
        duration.add_metric([kind], histogram.buckets(), histogram.sum)
    yield duration
    yield GaugeMetricFamily(
        "opentime_open_budget_seconds",
        "The largest open-time budget of any block (or default_budget_ms): what p99 should stay under.",
        value=largest_budget(services.campaigns.values(), services.settings.default_budget_ms),
    )


def largest_budget(campaigns: Iterable[Campaign], default_budget_ms: int) -> float:
    budgets = [default_budget_ms / 1000]
    for campaign in campaigns:
        for blocks in (campaign.lists, campaign.images, campaign.countdowns):
            budgets += [block.budget_s for block in blocks.values()]
    return max(budgets)


def _event_families(events: EventWriter, now: float) -> Iterator[Metric]:
    """Events from webhooks and stream ingest, through the group commit (``app.ingest.writer``)."""
    yield CounterMetricFamily(
        "opentime_events_rejected",
        "Webhook requests refused (503) because too many events were waiting for the store.",
        value=events.rejected,
    )
    committed = CounterMetricFamily(
        "opentime_events_committed", "Events in committed transactions, by status.", labels=["status"]
    )
    for status in get_args(EventStatus):  # every one, counted or not yet
        committed.add_metric([status], events.committed[status])
    yield committed
    yield CounterMetricFamily(
        "opentime_events_failed",
        "Events not saved because their transaction failed (the store): their senders retry.",
        value=events.failed,
    )
    yield GaugeMetricFamily(
        "opentime_events_queued", "Events accepted and not committed yet.", value=events.queued
    )
    yield GaugeMetricFamily(
        "opentime_events_oldest_queued_seconds",
        "Seconds the oldest event not committed yet has waited (0 when none waits).",
        value=events.oldest_wait(now),
    )
    delay = HistogramMetricFamily(
        "opentime_event_delay_seconds", "Applied events: seconds from their occurred_at to durable."
    )
    delay.add_metric([], events.delay.buckets(), events.delay.sum)
    yield delay


def _image_families(services: Services) -> Iterator[Metric]:
    fetches = CounterMetricFamily(
        "opentime_image_fetches", "Image requests by fetch class.", labels=["fetch_class"]
    )
    for fetch_class, count in sorted(services.images.fetch_counts.items()):
        fetches.add_metric([fetch_class], count)
    yield fetches
    yield CounterMetricFamily("opentime_image_renders", "Images rendered.", value=services.images.renders)
    pool = services.images.render_pool
    shed = CounterMetricFamily(
        "opentime_image_renders_shed",
        "Image renders refused at once: the queue was full, or too long to finish within the budget.",
        labels=["reason"],
    )
    for reason, count in pool.shed_by.items():
        shed.add_metric([reason], count)
    yield shed
    yield GaugeMetricFamily(
        "opentime_image_render_queue", "Image renders in flight or waiting.", value=pool.depth
    )
    yield GaugeMetricFamily(
        "opentime_image_render_backlog",
        "Refused image renders kept for when a render process is idle.",
        value=pool.backlog,
    )
    yield CounterMetricFamily(
        "opentime_image_renders_dropped",
        "Refused image renders the full backlog could not keep.",
        value=pool.dropped,
    )
    yield GaugeMetricFamily(
        "opentime_image_render_queue_limit", "Most image renders in flight or waiting.", value=pool.limit
    )
    yield GaugeMetricFamily(
        "opentime_image_render_processes", "Image render worker processes.", value=pool.workers
    )


def _limit_families(services: Services) -> Iterator[Metric]:
    limits = services.limits
    limited = CounterMetricFamily(
        "opentime_rate_limited", "Requests refused (429) by their rate limit, by scope.", labels=["scope"]
    )
    for scope, count in sorted(limits.limited.items()):
        limited.add_metric([scope], count)
    yield limited
    if services.shared is not None:
        local = CounterMetricFamily(
            "opentime_rate_limit_local_only",
            "Rate limits decided by this process alone because Redis did not answer, by scope.",
            labels=["scope"],
        )
        for scope, count in sorted(limits.local_only.items()):
            local.add_metric([scope], count)
        yield local


def _work_families(services: Services) -> Iterator[Metric]:
    """The bounded queues behind the open-time budget: what they hold, their bound, what they shed."""
    reads, images, upstream = services.store.profiles, services.images, services.upstream
    queues = [
        ("store_reads", reads.shed, reads.depth, reads.max_pending),
        ("renders", images.render_pool.shed_by, images.render_pool.depth, images.render_pool.limit),
    ]
    if upstream is not None:
        queues.append(("upstream_fetches", upstream.shed, upstream.fetches_in_flight, upstream.max_fetches))
    shed = CounterMetricFamily(
        "opentime_work_shed",
        "Work not queued because its queue was full, or dropped unstarted because nobody waited for it.",
        labels=["queue", "reason"],
    )
    depth = GaugeMetricFamily("opentime_work_depth", "Work queued or running, by queue.", labels=["queue"])
    limit = GaugeMetricFamily("opentime_work_limit", "The bound of each work queue.", labels=["queue"])
    for queue, counts, held, bound in queues:
        for reason, count in sorted(counts.items()):
            shed.add_metric([queue, reason], count)
        depth.add_metric([queue], held)
        if bound is not None:
            limit.add_metric([queue], bound)
    yield shed
    yield depth
    yield limit


def _breaker_families(services: Services) -> Iterator[Metric]:
    assert services.upstream is not None
    breaker = services.upstream.breaker
    current = breaker.state
    state = GaugeMetricFamily("opentime_upstream_breaker_state", "Upstream circuit state.", labels=["state"])
    for each in BreakerState:
        state.add_metric([each.value], 1.0 if each is current else 0.0)
    yield state
    yield GaugeMetricFamily(
        "opentime_upstream_breaker_failures", "Consecutive upstream failures.", value=breaker.failures
    )


def _privacy_families(services: Services) -> Iterator[Metric]:
    """opentime_erasures_total; with retention_days, opentime_retention_deleted_total{table},
    _runs_total{outcome} (ran, skipped: another process had the period, failed) and
    _last_run_timestamp_seconds (when this process last finished a pass; 0: never)."""
    yield CounterMetricFamily(
        "opentime_erasures", "Erasure requests carried out by this process.", value=services.eraser.erased
    )
    retention = services.retention
    if retention.days <= 0:
        return
    stats = retention.stats
    deleted = CounterMetricFamily(
        "opentime_retention_deleted", "Rows deleted by the retention limit, by table.", labels=["table"]
    )
    for table, count in sorted(stats.deleted.items()):
        deleted.add_metric([table], count)
    yield deleted
    runs = CounterMetricFamily("opentime_retention_runs", "Retention passes, by outcome.", labels=["outcome"])
    for outcome, count in (("ran", stats.runs), ("skipped", stats.skipped), ("failed", stats.failures)):
        runs.add_metric([outcome], count)
    yield runs
    yield GaugeMetricFamily(
        "opentime_retention_last_run_timestamp_seconds",
        "When this process last finished a retention pass (Unix time; 0: never).",
        value=stats.last_run,
    )


def _exposure_families(services: Services) -> Iterator[Metric]:
    """The exposure recorder's counters (``app.reports.recorder``), when the server runs one."""
    recorder = services.exposures
    if not isinstance(recorder, ExposureRecorder):
        return
    stats = recorder.stats
    for name, help_text, value in (
        ("recorded", "Exposures (opens, clicks) buffered for reports.", stats.recorded),
        ("sampled_out", "Opens left out by exposure_sample_rate.", stats.sampled_out),
        ("dropped", "Exposures lost: the buffer was full (exposure_buffer).", stats.dropped),
        ("flushed_rows", "Exposure counters added to the store.", stats.flushed_rows),
        (
            "flush_failures",
            "Exposure flushes the store refused (retried with the next).",
            stats.flush_failures,
        ),
    ):
        yield CounterMetricFamily(f"opentime_exposures_{name}", help_text, value=value)
    yield GaugeMetricFamily(
        "opentime_exposures_buffered", "Exposures waiting for the next flush.", value=recorder.buffered
    )


def _redis_families(shared: SharedTier) -> Iterator[Metric]:
    """opentime_redis_up; _errors_total{op}, _refused_total{op} (by the open breaker);
    _breaker_state{state}; _profile_lookups_total{result} (hit, miss, tombstone, unavailable);
    _profile_fills_total; _invalidations_total{direction}; _invalidation_backlog; _cache_resets_total;
    _replays_total and _replay_local_only_total (webhooks decided without Redis)."""
    redis = shared.redis
    yield GaugeMetricFamily(
        "opentime_redis_up", "1 when Redis answers and invalidations are heard.", value=shared.up
    )
    for name, counts, text in (("errors", redis.errors, "failed"), ("refused", redis.refused, "not tried")):
        family = CounterMetricFamily(
            f"opentime_redis_{name}", f"Redis calls {text}, by operation.", labels=["op"]
        )
        for op, count in sorted(counts.items()):
            family.add_metric([op], count)
        yield family
    state = GaugeMetricFamily("opentime_redis_breaker_state", "Redis circuit state.", labels=["state"])
    for each in BreakerState:
        state.add_metric([each.value], 1.0 if each is redis.breaker.state else 0.0)
    yield state
    tier = shared.profiles.stats
    lookups = CounterMetricFamily(
        "opentime_redis_profile_lookups", "Profile lookups in Redis after a local miss.", labels=["result"]
    )
    for result, count in (
        ("hit", tier.hits),
        ("miss", tier.misses),
        ("tombstone", tier.tombstones),
        ("unavailable", tier.unavailable),
    ):
        lookups.add_metric([result], count)
    yield lookups
    yield CounterMetricFamily(
        "opentime_redis_profile_fills", "Store reads written to Redis.", value=tier.fills
    )
    fanout = shared.invalidation.stats
    messages = CounterMetricFamily(
        "opentime_redis_invalidations", "Invalidation messages.", labels=["direction"]
    )
    messages.add_metric(["published"], fanout.published)
    messages.add_metric(["received"], fanout.received)
    yield messages
    yield GaugeMetricFamily(
        "opentime_redis_invalidation_backlog",
        "Changed recipients waiting for Redis to be announced.",
        value=shared.invalidation.backlog,
    )
    yield CounterMetricFamily(
        "opentime_redis_cache_resets", "Times every local cache was dropped.", value=fanout.resets
    )
    replay = shared.replay_guard.stats
    yield CounterMetricFamily("opentime_redis_replays", "Webhook replays Redis caught.", value=replay.replays)
    yield CounterMetricFamily(
        "opentime_redis_replay_local_only",
        "Webhooks checked by the local replay guard alone (Redis did not answer).",
        value=replay.local_only,
    )


def _ingest_families(ingest: ServerIngest) -> Iterator[Metric]:
    """opentime_ingest_messages_total{outcome} (acked, dead_lettered, retried); _events_total{status}
    (applied, duplicate); _reconnects_total; _connected (1 while consuming); _in_flight (taken, not
    settled). The queue's depth (the lag) is the broker's own metric, e.g. RabbitMQ's
    rabbitmq_queue_messages_ready: a consumer would have to ask the broker for it on every scrape."""
    counts = ingest.counts
    messages = CounterMetricFamily(
        "opentime_ingest_messages", "Queue messages settled, by outcome.", labels=["outcome"]
    )
    messages.add_metric(["acked"], counts.messages - counts.dead_lettered)
    messages.add_metric(["dead_lettered"], counts.dead_lettered)
    messages.add_metric(["retried"], counts.retried)
    yield messages
    events = CounterMetricFamily(
        "opentime_ingest_events", "Events from the queue committed, by status.", labels=["status"]
    )
    events.add_metric(["applied"], counts.applied)
    events.add_metric(["duplicate"], counts.duplicates)
    yield events
    yield CounterMetricFamily(
        "opentime_ingest_reconnects", "Broker connections re-opened after a loss.", value=ingest.reconnects
    )
    yield GaugeMetricFamily(
        "opentime_ingest_connected", "1 while consuming from the broker.", value=ingest.state == "consuming"
    )
    yield GaugeMetricFamily(
        "opentime_ingest_in_flight", "Messages taken and not settled yet.", value=ingest.consumer.in_flight
    )


def exposition(services: Services, others: Sequence[Snapshot] | None = None) -> bytes:
    """The current metrics, in the Prometheus text format (``CONTENT_TYPE``).

    ``others``: the snapshots of this run's other worker processes, added up with this one's counters.
    """
    registry = CollectorRegistry(auto_describe=False)
    share = services.worker_share
    if share is None or others is None:
        registry.register(_ServicesCollector(services))
    else:
        own = families(services)
        merged = merge(own, share.worker, others, now=services.clock(), summed_gauges=SUMMED_GAUGES)
        registry.register(_FamiliesCollector(merged))
    return generate_latest(registry)


def families(services: Services) -> list[Family]:
    """This process's metric families as plain data (what a worker's snapshot holds)."""
    return [
        Family(
            metric.name,
            metric.type,
            metric.documentation,
            {(sample.name, tuple(sample.labels.items())): sample.value for sample in metric.samples},
        )
        for metric in _ServicesCollector(services).collect()
    ]


def published(services: Services) -> AbstractAsyncContextManager[None]:
    """While open, this worker's snapshots for the other workers (only when it is one of several)."""
    share = services.worker_share
    if share is None:
        return nullcontext()
    return publishing(share, partial(families, services), services.clock)


class _FamiliesCollector(Collector):
    def __init__(self, families: Sequence[Family]) -> None:
        self._families = families

    def collect(self) -> Iterator[Metric]:
        for family in self._families:
            metric = Metric(family.name, family.help, family.type)
            for (name, labels), value in family.samples.items():
                metric.add_sample(name, dict(labels), value)
            yield metric
