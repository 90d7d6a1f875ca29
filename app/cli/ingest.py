"""``opentime ingest``: consume events from a message queue into the configured store.

The same validation and rules as ``POST /webhooks/events``; a message is acked only after its events
are committed and announced (through Redis when ``redis_url`` is set, as ``opentime import`` does);
poison messages go to ``<queue>.dead`` with the reason in the ``x-opentime-reason`` header. Runs until
SIGTERM/SIGINT, then finishes the messages in flight; exit 0. See ``app.ingest.consumer``.
"""

from __future__ import annotations

import asyncio
import logging
import logging.config
import signal
import time
from dataclasses import dataclass
from pathlib import Path

import click

from app.cli.common import config_option, database_option, fail, read_setting, store_url
from app.cli.import_profiles import shared_config
from app.config import LOG_LEVELS, read_event_types
from app.content.invalidation import Invalidation, LocalInvalidation
from app.ingest.amqp import AmqpSource, SourceError, quiet_client_logs
from app.ingest.consumer import Counts, StreamConsumer
from app.ingest.event_types import with_custom_types
from app.ingest.events import Rule
from app.ingest.source import EventSource
from app.ingest.writer import EventWriter
from app.logs import log_config
from app.shared.config import RedisConfig
from app.store import open_store
from app.store.base import EventRepository, StoreError


@click.command("ingest")
@config_option
@database_option
@click.option("--from", "source_url", required=True, help="Broker URL: amqp://user:password@host:port/vhost")
@click.option("--queue", required=True, help="Queue to consume (durable); poison goes to <queue>.dead.")
@click.option("--prefetch", type=click.IntRange(1, 10_000), default=100, show_default=True)
@click.option("--progress-every", type=click.IntRange(0), default=1000, show_default=True, help="0: quiet.")
def ingest(
    config: Path | None,
    database_url: str | None,
    source_url: str,
    queue: str,
    prefetch: int,
    progress_every: int,
) -> None:
    """Consume events from a RabbitMQ queue until SIGTERM/SIGINT (acked once durable)."""
    levels = ("info", read_setting("log_level", config))
    level = max(levels, key=LOG_LEVELS.index)  # progress lines are info: at least that
    logging.config.dictConfig(log_config(level, read_setting("log_format", config)))
    quiet_client_logs()  # a lost connection: app.ingest.amqp says it once
    url = store_url(config, database_url)
    try:
        source = AmqpSource(source_url, queue, prefetch=prefetch)
    except SourceError as exc:
        fail(str(exc))
    options = Options(
        rules=read_rules(read_setting("event_types_file", config, needed=False)),
        database_timeout_ms=read_setting("database_timeout_ms", config),
        max_body_bytes=read_setting("webhook_max_body_bytes", config),
        progress_every=progress_every,
    )
    try:
        asyncio.run(run_ingest(source, url, options, shared_config(config)))
    except StoreError as exc:
        fail(str(exc))


@dataclass(frozen=True, slots=True)
class Options:
    rules: dict[str, Rule]  # the servers' event types
    database_timeout_ms: int
    max_body_bytes: int  # as for a webhook body
    progress_every: int


def read_rules(path: Path | None) -> dict[str, Rule]:
    """The event types the servers accept (built-in, plus ``event_types_file``)."""
    try:
        return with_custom_types({"types": {}}) if path is None else read_event_types(path)
    except ValueError as exc:
        fail(f"setting event_types_file {exc}")


async def run_ingest(
    source: EventSource, database_url: str, options: Options, redis: RedisConfig | None
) -> Counts:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    store = open_store(database_url, timeout_ms=options.database_timeout_ms)
    await store.open()
    try:
        if redis is None:
            return await _consume(source, store.events, LocalInvalidation(), options, stop)
        from app.shared.tier import announcer  # only with Redis: see app.shared.config

        async with announcer(redis) as invalidation:
            return await _consume(source, store.events, invalidation, options, stop)
    finally:
        await store.close()


async def _consume(
    source: EventSource,
    events: EventRepository,
    invalidation: Invalidation,
    options: Options,
    stop: asyncio.Event,
) -> Counts:
    writer = EventWriter(events, clock=time.time, invalidation=invalidation)
    consumer = StreamConsumer(
        source,
        writer,
        clock=time.time,
        rules=options.rules,
        max_body_bytes=options.max_body_bytes,
        progress_every=options.progress_every,
        progress=lambda line: click.echo(f"ingest: {line}", err=True),
    )
    return await consumer.run(stop)
