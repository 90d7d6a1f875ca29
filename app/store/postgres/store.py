"""PostgreSQL store: an asyncpg pool, batched profile reads, COPY-based bulk upserts.

This module owns the pool and the error boundary: every asyncpg or OS error, and every timeout,
becomes a StoreError whose message names the server (user, host, port, database) but never the
password. The other aggregates' SQL (events, forms, API keys) sits in the sibling modules, run
through ``connection()`` / ``transaction()`` / ``run_transaction()``.

Every operation runs under one deadline (``timeout``: acquiring a connection, connecting if need be,
the statements, giving the connection back), so a slow or unreachable server fails requests instead
of hanging them. A connection that ran out of time or broke is dropped (terminated), never reset:
a graceful reset talks to the server, which may be the thing that hangs. The pool opens a new one on
the next acquire, so it recovers by itself when the server comes back.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from typing import TypeVar
from urllib.parse import parse_qsl, unquote, urlsplit

import asyncpg

from app.store.base import Profile, StoreError
from app.store.batching import BatchedLookups, Waiters, fail_waiters
from app.store.postgres.apikeys import PostgresApiKeys
from app.store.postgres.events import ConcurrentChange, PostgresEvents
from app.store.postgres.exposures import PostgresExposures
from app.store.postgres.forms import PostgresForms
from app.store.postgres.privacy import PostgresPrivacy
from app.store.postgres.schema import migrate
from app.store.postgres.transfer import PostgresTransfer

_new_tuple = tuple.__new__  # a Profile from a row in one C call (see the SQLite store)
_SELECT = (
    "SELECT recipient_id, attributes, version, updated_at FROM profiles WHERE recipient_id = ANY($1::text[])"
)
# The batch goes to a temporary table by COPY (far cheaper than row-by-row INSERTs), then merges in
# one statement; identical bytes are no change (the version stays), like SQLite's upsert.
# Imports take no advisory locks (a 5,000-row batch would fill the server's shared lock table):
# row locks order them against events and forms, and an event or form that read a recipient as
# missing runs again if an import created it meanwhile (see ``events.py``). The merge takes its row
# locks in recipient_id order, as events and forms do, so two imports never wait for each other in a
# cycle.
_STAGE = "CREATE TEMP TABLE import_rows (recipient_id text, attributes bytea) ON COMMIT DROP"
_MERGE = """
INSERT INTO profiles (recipient_id, attributes, version, updated_at)
SELECT recipient_id, attributes, 1, $1 FROM import_rows ORDER BY recipient_id
ON CONFLICT (recipient_id) DO UPDATE SET
    attributes = excluded.attributes, version = profiles.version + 1, updated_at = excluded.updated_at
WHERE profiles.attributes IS DISTINCT FROM excluded.attributes
"""
_ERRORS = (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError)
READ_CHUNK = 500  # recipient ids per lookup query, as in SQLite: a stall never makes one giant query
RETRIES = 3  # runs of a transaction that met a concurrent change or a deadlock, before giving up
# Query parameters asyncpg accepts as a password: hidden from error messages like the user-info one.
_SECRET_PARAMETERS = ("password", "sslpassword")
T = TypeVar("T")


class _PooledConnection(asyncpg.Connection):  # type: ignore[misc]
    """A pooled connection that goes back to the pool without asyncpg's reset query.

    That query (``pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *; RESET ALL``) is one more round trip
    on every release, so on every batched open-time read (about 25% more CPU per batch here). Nothing
    of ours outlives a transaction: advisory locks are transaction locks, and there is no SET, LISTEN or
    cursor. asyncpg still rolls back a transaction left open before the connection is reused.
    """

    def get_reset_query(self) -> str:
        return ""


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
        create: bool = True,
        timeout_seconds: float = 5.0,
        pool_size: int = 10,
    ) -> None:
        super().__init__()
        self._url = url
        self.label = describe(url)
        self._secrets = _secrets(url)
        self._clock = clock
        self._upgrade = upgrade
        self._create = create
        self.problem: str | None = None  # PostgreSQL reports its own failures on every query
        self._timeout = timeout_seconds
        self._pool_size = pool_size
        self._pool: asyncpg.Pool | None = None
        self._read_task: asyncio.Task[None] | None = None
        self.schema: tuple[int, int] | None = None
        self.events = PostgresEvents(self)
        self.forms = PostgresForms(self)
        self.api_keys = PostgresApiKeys(self)
        self.privacy = PostgresPrivacy(self)
        self.exposures = PostgresExposures(self)
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
                    connection_class=_PooledConnection,
                )
        except (*_ERRORS, ValueError) as exc:
            raise self._error(exc) from None
        try:
            async with self.connection() as conn:
                self.schema = await migrate(conn, self.label, upgrade=self._upgrade, create=self._create)
        except BaseException:
            await self.close()
            raise
        self._loop = asyncio.get_running_loop()

    async def close(self) -> None:
        pool, self._pool, self._loop = self._pool, None, None
        self._fail_pending(StoreError("store is closed"))
        task, self._read_task = self._read_task, None
        if task is not None and not task.done():
            # Its waiters are told the store closed; it must not outlive the pool and log afterwards.
            task.cancel()
            await asyncio.wait([task])
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
            async with asyncio.timeout(self._timeout) as deadline:
                conn = await pool.acquire()
                try:
                    yield conn
                except (asyncpg.PostgresError, StoreError):
                    await _give_back(pool, conn, deadline)  # the server answered: the connection is fine
                    raise
                except BaseException:
                    # Out of time, cancelled or broken: drop it at once (the server rolls back).
                    conn.terminate()
                    await pool.release(conn)  # closed: returns at once
                    raise
                await _give_back(pool, conn, deadline)
        except _ERRORS as exc:
            raise self._error(exc) from None

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[asyncpg.Connection]:
        """A connection inside one transaction, committed (durably) before the block's caller resumes."""
        async with self.connection() as conn, _atomic(conn):
            yield conn

    async def run_transaction(self, work: Callable[[asyncpg.Connection], Awaitable[T]]) -> T:
        """``work`` in one transaction, run again (up to ``RETRIES`` times, under the same deadline)
        when it meets a concurrent change (``ConcurrentChange``) or the server breaks a deadlock."""
        async with self.connection() as conn:
            for attempt in range(1, RETRIES + 1):
                try:
                    async with _atomic(conn):
                        return await work(conn)
                except (ConcurrentChange, asyncpg.DeadlockDetectedError):
                    if attempt == RETRIES:
                        raise
        raise AssertionError("unreachable")  # pragma: no cover

    def _error(self, exc: BaseException) -> StoreError:
        if isinstance(exc, TimeoutError):
            return StoreError(f"{self.label}: no answer within {self._timeout:g}s")
        text = str(exc) or type(exc).__name__
        for secret in self._secrets:
            text = text.replace(secret, "***")
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
        except asyncio.CancelledError:  # the store is closing (``close``)
            fail_waiters(batch, StoreError("store is closed"))
            raise
        self._deliver(batch, outcome)

    async def _select(self, ids: list[str]) -> dict[str, Profile]:
        found: dict[str, Profile] = {}
        async with self.connection() as conn:
            for start in range(0, len(ids), READ_CHUNK):
                rows = await conn.fetch(_SELECT, ids[start : start + READ_CHUNK])
                # The row is (recipient_id, attributes, version, updated_at): Profile's own layout.
                found.update((row[0], _new_tuple(Profile, row)) for row in rows)
        return found

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
        unique = sorted(dict(rows).items())
        return await self.run_transaction(lambda conn: self._merge(conn, unique))

    async def _merge(self, conn: asyncpg.Connection, rows: list[tuple[str, bytes]]) -> int:
        await conn.execute(_STAGE)
        await conn.copy_records_to_table("import_rows", records=rows)
        status: str = await conn.execute(_MERGE, self._clock())
        return int(status.rsplit(" ", 1)[1])  # "INSERT 0 <rows inserted or changed>"


@asynccontextmanager
async def _atomic(conn: asyncpg.Connection) -> AsyncIterator[None]:
    """One transaction on ``conn``, rolled back when the block fails with an answer from the server (or
    our own StoreError); on any other failure the connection is dropped, and the server rolls back."""
    transaction = conn.transaction()
    await transaction.start()
    try:
        yield
    except (asyncpg.PostgresError, StoreError):
        await transaction.rollback()
        raise
    await transaction.commit()


async def _give_back(pool: asyncpg.Pool, conn: asyncpg.Connection, deadline: asyncio.Timeout) -> None:
    """Return ``conn`` to the pool (a reset, which talks to the server) within what is left of the
    operation's deadline; past it the connection is dropped instead, so a failure is never late."""
    when = deadline.when()
    left = None if when is None else when - asyncio.get_running_loop().time()
    if left is not None and left <= 0:
        conn.terminate()
        left = None
    await pool.release(conn, timeout=left)


def _secrets(url: str) -> tuple[str, ...]:
    """The passwords a URL carries (user info, ``password=`` / ``sslpassword=``), to hide in messages."""
    parts = urlsplit(url)
    found = [parts.password or ""] + [v for k, v in parse_qsl(parts.query) if k in _SECRET_PARAMETERS]
    found += [unquote(secret) for secret in found]  # as given, and as a driver message may print it
    return tuple(secret for secret in dict.fromkeys(found) if secret)


def describe(url: str) -> str:
    """The server a URL names, for messages: never its password."""
    parts = urlsplit(url)
    user = f"{unquote(parts.username)}@" if parts.username else ""
    host = parts.hostname or "localhost"
    port = f":{parts.port}" if parts.port else ""
    return f"postgresql {user}{host}{port}{parts.path or '/'}"
