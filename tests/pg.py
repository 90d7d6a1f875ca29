"""PostgreSQL for tests: the machine's server at 127.0.0.1:5432, one fresh schema per test.

``pg_url`` (a fixture) and ``fresh_pg_url()`` (a context manager) give a ``postgresql://`` URL whose
``search_path`` is a new, empty schema, dropped afterwards, so tests never see each other's rows and
never touch anything else in the shared database. When the server does not answer, the test is
skipped with the reason, except under CI=true, where it fails.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import threading
import time
from collections.abc import AsyncIterator, Coroutine, Iterator
from contextlib import asynccontextmanager, contextmanager
from functools import cache
from typing import Any, TypeVar

import asyncpg
import pytest

HOST, PORT, DATABASE = "127.0.0.1", 5432, "test"
USERS = ("root", "postgres")  # trust auth: whichever role the machine has
T = TypeVar("T")


def run_sync(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` to completion on a private loop in a thread (callable from inside a running loop)."""
    result: list[T] = []
    errors: list[BaseException] = []

    def target() -> None:
        try:
            result.append(asyncio.run(coro))
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=target)
    thread.start()
    thread.join()
    if errors:
        raise errors[0]
    return result[0]


def base_url(host: str = HOST, port: int = PORT) -> str:
    """The URL of the test database (no schema chosen); skips (fails under CI) when PG does not answer."""
    found = _server_user()
    if isinstance(found, Exception):
        reason = f"PostgreSQL at {HOST}:{PORT} database {DATABASE!r} does not answer: {found}"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    return f"postgresql://{found}@{host}:{port}/{DATABASE}"


@cache
def _server_user() -> str | Exception:
    async def probe(user: str) -> None:
        conn = await asyncpg.connect(host=HOST, port=PORT, user=user, database=DATABASE, timeout=3)
        await conn.close()

    error: Exception = RuntimeError("no role to connect as")
    for user in USERS:
        try:
            run_sync(probe(user))
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError) as exc:
            error = exc
            continue
        return user
    return error


def with_schema(url: str, schema: str) -> str:
    """``url`` with its tables in ``schema`` (asyncpg passes unknown query parameters as settings)."""
    return f"{url}?search_path={schema}"


@contextmanager
def fresh_pg_url(host: str = HOST, port: int = PORT) -> Iterator[str]:
    """A URL on a new empty schema of the test database, dropped when the block ends.

    ``host``/``port`` may name a proxy in front of the server (tests/tcp_proxy.py): the schema is
    made and dropped through the server itself.
    """
    direct = base_url()
    schema = f"t_{secrets.token_hex(6)}"
    run_sync(_execute(direct, f"CREATE SCHEMA {schema}"))
    try:
        yield with_schema(base_url(host, port), schema)
    finally:
        run_sync(_execute(direct, f"DROP SCHEMA {schema} CASCADE"))


async def _execute(url: str, statement: str) -> None:
    conn = await asyncpg.connect(url, timeout=5)
    try:
        await conn.execute(statement)
    finally:
        await conn.close()


def query(url: str, statement: str, *args: object) -> list[tuple[Any, ...]]:
    """Rows of one statement run on ``url`` (for checking what a test stored)."""

    async def fetch() -> list[tuple[Any, ...]]:
        conn = await asyncpg.connect(url, timeout=5)
        try:
            return [tuple(row) for row in await conn.fetch(statement, *args)]
        finally:
            await conn.close()

    return run_sync(fetch())


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A fresh schema's URL for this test (see ``fresh_pg_url``)."""
    with fresh_pg_url() as url:
        yield url


@asynccontextmanager
async def open_transaction(url: str) -> AsyncIterator[asyncpg.Connection]:
    """A connection of its own inside an open transaction: what it writes holds its locks until the
    test runs COMMIT or ROLLBACK on it (or the block ends: closed, so rolled back)."""
    conn = await asyncpg.connect(url, timeout=5)
    try:
        await conn.execute("BEGIN")
        yield conn
    finally:
        await conn.close()


def named(url: str, application_name: str) -> str:
    """``url`` (made by ``with_schema``) whose sessions show ``application_name`` in pg_stat_activity."""
    return f"{url}&application_name={application_name}"


async def until_waiting_for_a_lock(application_name: str) -> None:
    """Return once a session named ``application_name`` waits for a lock another one holds (10 s at most)."""
    conn = await asyncpg.connect(base_url(), timeout=5)
    try:
        deadline = time.monotonic() + 10.0
        while not await conn.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1 AND wait_event_type = 'Lock'",
            application_name,
        ):
            assert time.monotonic() < deadline, f"{application_name} never waited for a lock"
            await asyncio.sleep(0.02)
    finally:
        await conn.close()
