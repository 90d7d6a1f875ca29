"""A PostgreSQL server that hangs (tests/tcp_proxy.py holds every byte): each store operation fails
within its deadline, the webhook group commit fails its queue at once, and closing the store is
prompt and quiet. Also: a store starts on a current schema without the right to create anything."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Iterator

import pytest

from app.content.invalidation import LocalInvalidation
from app.ingest.writer import EventWriter
from app.store import Store, open_store
from app.store.base import StoreError
from tests.contract.conftest import NOW, event
from tests.pg import HOST, PORT, fresh_pg_url
from tests.tcp_proxy import TcpProxy

pytestmark = pytest.mark.anyio
DEADLINE = 1.0
SLACK = 0.4  # scheduling on a busy 2-CPU machine


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def proxy() -> Iterator[TcpProxy]:
    with TcpProxy(HOST, PORT) as running:
        yield running
        running.resume()


@pytest.fixture
async def store(proxy: TcpProxy) -> AsyncIterator[Store]:
    with fresh_pg_url(HOST, proxy.port) as url:
        opened = open_store(url, clock=lambda: NOW, timeout_ms=int(DEADLINE * 1000))
        await opened.open()
        try:
            await opened.profiles.upsert_many([("r1", b"{}")])
            yield opened
        finally:
            proxy.resume()
            await opened.close()


async def failure_time(operation: asyncio.Future[object] | asyncio.Task[object]) -> float:
    started = time.perf_counter()
    with pytest.raises(StoreError, match="no answer within"):
        await operation
    return time.perf_counter() - started


async def test_each_operation_fails_within_its_deadline_and_the_store_recovers(
    store: Store, proxy: TcpProxy
) -> None:
    proxy.pause()
    # An event commit used to take two deadlines: the graceful release waited one more for the server.
    assert (
        await failure_time(asyncio.ensure_future(store.events.commit([event("e1")], NOW))) < DEADLINE + SLACK
    )
    assert await failure_time(asyncio.ensure_future(store.profiles.get_many(["r1"]))) < DEADLINE + SLACK
    assert await failure_time(store.profiles.lookup("r1")) < DEADLINE + SLACK
    proxy.resume()
    assert await store.events.commit([event("e1")], NOW) == ["applied"]
    assert (await store.profiles.get_many(["r1"]))["r1"].version == 2


async def test_a_failed_commit_fails_the_requests_queued_behind_it_at_once(
    store: Store, proxy: TcpProxy
) -> None:
    writer = EventWriter(store.events, clock=lambda: NOW, invalidation=LocalInvalidation())
    proxy.pause()
    started = time.perf_counter()
    first = asyncio.create_task(writer.write([event("e0")]))
    await asyncio.sleep(0.05)  # in flight; these queue behind it
    queued = [asyncio.create_task(writer.write([event(f"e{i}", f"r{i}")])) for i in range(1, 4)]
    results = await asyncio.gather(first, *queued, return_exceptions=True)
    assert all(isinstance(result, StoreError) for result in results)
    # Before, each queued batch waited out a deadline of its own: 2 deadlines at least.
    assert time.perf_counter() - started < DEADLINE + SLACK
    assert writer.transactions == 0


async def test_close_fails_the_read_in_flight_at_once_and_nothing_logs_after_it(
    store: Store, proxy: TcpProxy, caplog: pytest.LogCaptureFixture
) -> None:
    proxy.pause()
    lookup = store.profiles.lookup("r1")
    await asyncio.sleep(0.1)  # the read is in flight, stuck
    started = time.perf_counter()
    await store.close()
    with pytest.raises(StoreError, match="store is closed"):
        await lookup
    assert time.perf_counter() - started < DEADLINE + SLACK
    caplog.clear()
    with caplog.at_level(logging.DEBUG):
        await asyncio.sleep(DEADLINE + SLACK)  # a pool left running would try to reconnect, and log
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []


async def test_a_current_schema_opens_without_the_right_to_create_tables() -> None:
    with fresh_pg_url() as url:
        first = open_store(url)
        await first.open()
        await first.profiles.upsert_many([("r1", b'{"a":1}')])
        await first.close()
        # A read-only session stands in for a role without CREATE: start-up created its version table
        # with CREATE TABLE IF NOT EXISTS, which needs the right even when the table is there.
        read_only = open_store(f"{url}&default_transaction_read_only=on")
        await read_only.open()
        try:
            assert (await read_only.profiles.get_many(["r1"]))["r1"].attributes == b'{"a":1}'
        finally:
            await read_only.close()
