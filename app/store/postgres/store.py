"""PostgreSQL store: an asyncpg pool, batched profile reads, COPY-based bulk upserts.

This module owns the pool and the error boundary: every asyncpg or OS error, and every timeout,
becomes a StoreError whose message names the server (user, host, port, database) but never the
password. The other aggregates' SQL (events, forms, API keys) sits in the sibling modules, run
through ``connection()`` / ``transaction()``.

Every operation runs under one deadline (``timeout``: acquiring a connection, connecting if need be,
the statements, giving the connection back), so a slow or unreachable server fails requests instead
of hanging them; the pool replaces broken connections on the next acquire, so it recovers by itself
when the server comes back.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from urllib.parse import unquote, urlsplit

import asyncpg

from app.store.base import Profile, StoreError
from app.store.batching import BatchedLookups, Waiters
from app.store.postgres.apikeys import PostgresApiKeys
from app.store.postgres.events import PostgresEvents
from app.store.postgres.forms import PostgresForms
from app.store.postgres.schema import migrate
from app.store.postgres.transfer import PostgresTransfer

_new_tuple = tuple.__new__  # a Profile from a row in one C call (see the SQLite store)
_SELECT = (
    "SELECT recipient_id, attributes, version, updated_at FROM profiles WHERE recipient_id = ANY($1::text[])"
)
# The batch goes to a temporary table by COPY (far cheaper than row-by-row INSERTs), then merges in
# one statement; identical bytes are no change (the version stays), like SQLite's upsert.
_STAGE = "CREATE TEMP TABLE import_rows (recipient_id text, attributes bytea) ON COMMIT DROP"
_MERGE = """
INSERT INTO profiles (recipient_id, attributes, version, updated_at)
SELECT recipient_id, attributes, 1, $1 FROM import_rows
ON CONFLICT (recipient_id) DO UPDATE SET
    attributes = excluded.attributes, version = profiles.version + 1, updated_at = excluded.updated_at
WHERE profiles.attributes IS DISTINCT FROM excluded.attributes
"""
_ERRORS = (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError)


class PostgresStore(BatchedLookups):
    """A ``Store`` in one PostgreSQL database (the schema the URL's ``search_path`` names first).

    It is its own profile repository, like the SQLite store: ``fetch`` is the open-time path.
    """

    def __init__(
        self,
        url: str,
        *,
        clock: Callable[[], float] = time.time,
        upgrade: bool = False,
        timeout_seconds: float = 5.0,
        pool_size: int = 10,
    ) -> None:
        super().__init__()
        self._url = url
        self.label = describe(url)
        self._password = urlsplit(url).password or ""
        self._clock = clock
        self._upgrade = upgrade
        self._timeout = timeout_seconds
        self._pool_size = pool_size
        self._pool: asyncpg.Pool | None = None
        self._read_task: asyncio.Task[None] | None = None
        self.schema: tuple[int, int] | None = None
        self.events = PostgresEvents(self)
        self.forms = PostgresForms(self)
        self.api_keys = PostgresApiKeys(self)
        self.transfer = PostgresTransfer(self)

    @property
    def profiles(self) -> PostgresStore:
        return self

    # -- lifecycle -------------------------------------------------------------------------------

    async def open(self) -> None:
        if self._pool is not None:
            raise StoreError("store is already open")
        try:
            async with asyncio.timeout(self._timeout):
                self._pool = await asyncpg.create_pool(
                    self._url,
                    min_size=1,
                    max_size=self._pool_size,
                    timeout=self._timeout,  # connecting
                    command_timeout=self._timeout,
                )
        except (*_ERRORS, ValueError) as exc:
            raise self._error(exc) from None
        try:
            async with self.connection() as conn:
                self.schema = await migrate(conn, self.label, upgrade=self._upgrade)
        except BaseException:
            await self.close()
            raise
        self._loop = asyncio.get_running_loop()

    async def close(self) -> None:
        pool, self._pool, self._loop = self._pool, None, None
        self._fail_pending(StoreError("store is closed"))
        task, self._read_task = self._read_task, None
        if task is not None and not task.done():
            await asyncio.wait([task], timeout=self._timeout)
        if pool is None:
            return
        try:
            await asyncio.wait_for(pool.close(), self._timeout)
        except (*_ERRORS, asyncio.CancelledError):
            pool.terminate()  # the server is gone or stuck: drop the sockets

    # -- the error boundary ----------------------------------------------------------------------

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[asyncpg.Connection]:
        """A pooled connection, for one deadline; asyncpg and OS errors come out as StoreError."""
        pool = self._pool
        if pool is None:
            raise StoreError("store is not open")
        try:
            async with asyncio.timeout(self._timeout):
                conn = await pool.acquire()
                try:
                    yield conn
                finally:
                    # Bounded too: resetting a connection to a stuck server must not hang the caller.
                    await pool.release(conn, timeout=self._timeout)
        except _ERRORS as exc:
            raise self._error(exc) from None

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[asyncpg.Connection]:
        """A connection inside one transaction, committed (durably) before the block's caller resumes."""
        async with self.connection() as conn, conn.transaction():
            yield conn

    def _error(self, exc: BaseException) -> StoreError:
        if isinstance(exc, TimeoutError):
            return StoreError(f"{self.label}: no answer within {self._timeout:g}s")
        text = str(exc) or type(exc).__name__
        if self._password:
            text = text.replace(self._password, "***")
        return StoreError(f"{self.label}: {text}")

    # -- reads -----------------------------------------------------------------------------------

    def _start_read(self, loop: asyncio.AbstractEventLoop, batch: Waiters) -> None:
        self._read_task = loop.create_task(self._read_batch(batch))

    async def _read_batch(self, batch: Waiters) -> None:
        outcome: dict[str, Profile] | Exception
        try:
            outcome = await self._select(list(batch))
        except StoreError as exc:
            outcome = exc
        self._deliver(batch, outcome)

    async def _select(self, ids: list[str]) -> dict[str, Profile]:
        async with self.connection() as conn:
            rows = await conn.fetch(_SELECT, ids)
        # The row is (recipient_id, attributes, version, updated_at): Profile's own layout.
        return {row[0]: _new_tuple(Profile, row) for row in rows}

    async def get_many(self, recipient_ids: Sequence[str]) -> dict[str, Profile]:
        if self._pool is None:
            raise StoreError("store is not open")
        ids = list(dict.fromkeys(recipient_ids))
        if not ids:
            return {}
        self._count_read(len(ids))
        return await self._select(ids)

    async def count(self) -> int:
        async with self.connection() as conn:
            count: int = await conn.fetchval("SELECT count(*) FROM profiles")
        return count

    async def ping(self) -> None:
        async with self.connection() as conn:
            await conn.execute("SELECT 1 FROM profiles LIMIT 1")

    # -- writes ----------------------------------------------------------------------------------

    async def upsert_many(self, rows: Sequence[tuple[str, bytes]]) -> int:
        if self._pool is None:
            raise StoreError("store is not open")
        if not rows:
            return 0
        # One row per recipient (the last wins, as it would row by row): a merge may touch a row once.
        unique = dict(rows)
        async with self.transaction() as conn:
            await conn.execute(_STAGE)
            await conn.copy_records_to_table("import_rows", records=unique.items())
            status = await conn.execute(_MERGE, self._clock())
        return int(status.rsplit(" ", 1)[1])  # "INSERT 0 <rows inserted or changed>"


def describe(url: str) -> str:
    """The server a URL names, for messages: never its password."""
    parts = urlsplit(url)
    user = f"{unquote(parts.username)}@" if parts.username else ""
    host = parts.hostname or "localhost"
    port = f":{parts.port}" if parts.port else ""
    return f"postgresql {user}{host}{port}{parts.path or '/'}"
