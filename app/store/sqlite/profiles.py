"""SQLite store: WAL, one reader thread and one writer thread, batched profile reads.

This module owns the connections and the schema; every sqlite3 error becomes StoreError here. The
other aggregates' SQL (events, forms, API keys) sits in the sibling modules, run through
``run_read`` / ``run_write``.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

from app.store.base import Profile, StoreError
from app.store.batching import BatchedLookups, Waiters
from app.store.sqlite.apikeys import SQLiteApiKeys
from app.store.sqlite.events import SQLiteEvents
from app.store.sqlite.exposures import SQLiteExposures
from app.store.sqlite.file_guard import FileGuard
from app.store.sqlite.forms import SQLiteForms
from app.store.sqlite.privacy import SQLitePrivacy
from app.store.sqlite.transfer import SQLiteTransfer
from app.store.versions import NOT_CREATED, check_version

T = TypeVar("T")

# tuple.__new__ builds a named tuple from a row in one C call (Profile(*row) runs Python-level __new__).
_new_tuple = tuple.__new__
SCHEMA_VERSION = 5
READ_CHUNK = 500
# The reader's page cache (SQLite's default is 2 MiB). A million profiles make ~5 MB of interior B-tree
# pages: with 2 MiB, a lookup re-read ~2 of them from the OS besides its leaf (strace: 3.2 preads per
# row, 2.2 with 16 MiB); the bench's cold opens cost ~5% less CPU. Counted in RSS as it fills.
READER_CACHE_KIB = 16 * 1024
# Padding IN (...) lists to a few sizes keeps the statement cache hot instead of compiling 500 variants.
_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, READ_CHUNK)
_SELECT = "SELECT recipient_id, attributes, version, updated_at FROM profiles WHERE recipient_id IN "
_SELECTS = {n: _SELECT + "(" + ",".join("?" * n) + ")" for n in _BUCKETS}  # only placeholders
_SCHEMA = """
CREATE TABLE IF NOT EXISTS profiles (
    recipient_id TEXT PRIMARY KEY,
    attributes BLOB NOT NULL,
    field_times BLOB NOT NULL DEFAULT '{}',
    version INTEGER NOT NULL,
    updated_at REAL NOT NULL
) WITHOUT ROWID
"""
# Migrations by target user_version; each runs once, in one transaction.
_MIGRATIONS: dict[int, tuple[str, ...]] = {
    1: (_SCHEMA,),
    2: (
        """CREATE TABLE IF NOT EXISTS api_keys (
            key_id TEXT PRIMARY KEY,
            name TEXT NOT NULL,
            secret_hash BLOB NOT NULL,
            scopes TEXT NOT NULL,
            created_at REAL NOT NULL,
            revoked_at REAL
        ) WITHOUT ROWID""",
        """CREATE TABLE IF NOT EXISTS form_submissions (
            submission_id TEXT PRIMARY KEY,
            campaign TEXT NOT NULL,
            block TEXT NOT NULL,
            recipient_id TEXT NOT NULL,
            payload BLOB NOT NULL,
            created_at REAL NOT NULL
        ) WITHOUT ROWID""",
        "CREATE INDEX IF NOT EXISTS form_submissions_by_recipient ON form_submissions (recipient_id)",
    ),
    3: (
        # Applied webhook events, by id: a replayed id is a no-op (app/store/sqlite/events.py).
        """CREATE TABLE IF NOT EXISTS events (
            id TEXT PRIMARY KEY,
            recipient TEXT NOT NULL,
            type TEXT NOT NULL,
            occurred_at TEXT NOT NULL,
            received_at REAL NOT NULL
        ) WITHOUT ROWID""",
    ),
    4: (
        # Erasure and access requests read a recipient's events; retention deletes by age.
        "CREATE INDEX IF NOT EXISTS events_by_recipient ON events (recipient)",
        "CREATE INDEX IF NOT EXISTS events_by_received_at ON events (received_at)",
        "CREATE INDEX IF NOT EXISTS form_submissions_by_created_at ON form_submissions (created_at)",
        # One row per erasure, without the id: a keyed hash of it (app/store/sqlite/privacy.py).
        """CREATE TABLE IF NOT EXISTS erasures (
            erasure_id TEXT PRIMARY KEY,
            id_hash BLOB NOT NULL,
            erased_at REAL NOT NULL,
            requested_by TEXT NOT NULL,
            profiles INTEGER NOT NULL,
            events INTEGER NOT NULL,
            form_answers INTEGER NOT NULL
        ) WITHOUT ROWID""",
        "CREATE INDEX IF NOT EXISTS erasures_by_id_hash ON erasures (id_hash)",
        # Secrets the store keeps for itself (the key of erasure records).
        """CREATE TABLE IF NOT EXISTS store_secrets (
            name TEXT PRIMARY KEY, secret BLOB NOT NULL
        ) WITHOUT ROWID""",
        # When periodic work (retention) last ran, so processes sharing the store run it once a period.
        """CREATE TABLE IF NOT EXISTS maintenance (
            task TEXT PRIMARY KEY, claimed_at REAL NOT NULL
        ) WITHOUT ROWID""",
    ),
    5: (
        # Exposure counters per hour (app/store/sqlite/exposures.py): reports read a campaign's hours,
        # retention deletes by hour.
        """CREATE TABLE IF NOT EXISTS exposures (
            bucket TEXT PRIMARY KEY,
            campaign TEXT NOT NULL,
            block TEXT NOT NULL,
            variant TEXT NOT NULL,
            experiment TEXT NOT NULL,
            fetch_class TEXT NOT NULL,
            outcome TEXT NOT NULL,
            kind TEXT NOT NULL,
            event TEXT NOT NULL,
            hour INTEGER NOT NULL,
            recorded INTEGER NOT NULL,
            weight REAL NOT NULL
        ) WITHOUT ROWID""",
        "CREATE INDEX IF NOT EXISTS exposures_by_campaign ON exposures (campaign, hour)",
        "CREATE INDEX IF NOT EXISTS exposures_by_hour ON exposures (hour)",
    ),
}
_UPSERT = """
INSERT INTO profiles (recipient_id, attributes, version, updated_at) VALUES (?, ?, 1, ?)
ON CONFLICT (recipient_id) DO UPDATE SET
    attributes = excluded.attributes, version = profiles.version + 1, updated_at = excluded.updated_at
WHERE profiles.attributes IS NOT excluded.attributes
"""


class SQLiteProfileStore(BatchedLookups):
    """A ``Store`` in one SQLite file in WAL mode; it is its own profile repository.

    A reader thread and a writer thread each own one connection, so the event loop never touches the
    disk. ``get()`` calls made in the same loop tick, or while a read is in flight, share one
    ``IN (...)`` query; ``read_stats`` counts the jobs sent to the reader thread and their keys. Writes use
    synchronous=FULL: a returned ``upsert_many`` survives power loss, which acknowledged events rely on.
    Memory-mapped reads are off by default: mapped pages of a large store count in the process's RSS
    (about 300 MB for a million profiles), and reads already run on the reader thread.
    """

    def __init__(
        self,
        path: Path,
        *,
        clock: Callable[[], float] = time.time,
        busy_timeout: float = 5.0,
        mmap_size: int = 0,
        upgrade: bool = False,
        create: bool = True,
    ) -> None:
        super().__init__()
        self.path = path
        # False for a server: a missing file is an error, not a new empty store (``opentime db init``).
        self._create = create
        self._guard: FileGuard | None = None  # the file opened, watched (app.store.sqlite.file_guard)
        # An empty file is created at the newest schema; an older schema is refused unless ``upgrade``
        # (``opentime db upgrade``): migrating a shared store is an operator's step, not a side effect.
        self._upgrade = upgrade
        self.schema: tuple[int, int] | None = None  # (version found, version now) once open
        self._clock = clock
        self._busy_timeout = busy_timeout
        self._mmap_size = mmap_size
        self._threads: tuple[ThreadPoolExecutor, ThreadPoolExecutor] | None = None  # (reader, writer)
        self._rconn: sqlite3.Connection | None = None  # touched only on the reader thread
        self._wconn: sqlite3.Connection | None = None  # touched only on the writer thread
        self.events = SQLiteEvents(self)
        self.forms = SQLiteForms(self)
        self.api_keys = SQLiteApiKeys(self)
        self.privacy = SQLitePrivacy(self)
        self.exposures = SQLiteExposures(self)
        self.transfer = SQLiteTransfer(self)

    @property
    def problem(self) -> str | None:
        """Why the store refuses everything (its file deleted, replaced or corrupt), or None."""
        return None if self._guard is None else self._guard.problem

    @property
    def profiles(self) -> SQLiteProfileStore:
        # The profile methods stay on this object: the open-time path's fetch() costs no extra hop.
        return self

    # -- lifecycle -------------------------------------------------------------------------------

    async def open(self) -> None:
        if self._loop is not None:
            raise StoreError("store is already open")
        self._loop = asyncio.get_running_loop()
        reader = ThreadPoolExecutor(1, thread_name_prefix="opentime-sqlite-reader")
        writer = ThreadPoolExecutor(1, thread_name_prefix="opentime-sqlite-writer")
        self._threads = (reader, writer)
        try:
            await self._run(writer, self._open_writer)  # creates the schema before the reader looks
            await self._run(reader, self._open_reader)
        except BaseException:
            await self.close()
            raise

    async def close(self) -> None:
        threads, self._threads, self._loop = self._threads, None, None
        self._fail_pending(StoreError("store is closed"))
        if threads is None:
            return
        # Queued behind any running job, so in-flight reads and writes finish first.
        for executor, close in zip(threads, (self._close_reader, self._close_writer), strict=True):
            try:
                await self._run(executor, close)
            finally:
                executor.shutdown(wait=False)

    # -- reads -----------------------------------------------------------------------------------

    async def get_many(self, recipient_ids: Sequence[str]) -> dict[str, Profile]:
        reader, _ = self._open_threads()
        ids = list(dict.fromkeys(recipient_ids))
        if not ids:
            return {}
        self._count_read(len(ids))
        return await self._run(reader, self._select, ids)

    async def count(self) -> int:
        reader, _ = self._open_threads()
        return await self._run(reader, self._count)

    async def ping(self) -> None:
        reader, _ = self._open_threads()
        await self._run(reader, self._ping)

    # -- writes ----------------------------------------------------------------------------------

    async def upsert_many(self, rows: Sequence[tuple[str, bytes]]) -> int:
        _, writer = self._open_threads()
        if not rows:
            return 0
        return await self._run(writer, self._upsert, rows, self._clock())

    # -- other tables (for the repositories of this package) --------------------------------------

    async def run_read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn(connection)`` on the reader thread (read-only connection)."""
        reader, _ = self._open_threads()
        return await self._run(reader, lambda: fn(_require(self._rconn)))

    async def run_write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn(connection)`` on the writer thread inside one transaction, committed before returning."""
        _, writer = self._open_threads()
        return await self._run(writer, self._in_transaction, fn)

    def _in_transaction(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        conn = _require(self._wconn)
        self._check_file()
        conn.execute("BEGIN IMMEDIATE")
        try:
            result = fn(conn)
            conn.execute("COMMIT")
        except BaseException:
            _rollback(conn)
            raise
        self._check_file()  # committed into the file the path still names: only then acknowledged
        return result

    def _check_file(self) -> None:
        if self._guard is not None:
            self._guard.check()

    # -- batching: the reader thread runs each batch -------------------------------------------

    def _start_read(self, loop: asyncio.AbstractEventLoop, batch: Waiters) -> None:
        if self._threads is None:
            self._deliver(batch, StoreError("store is closed"))
            return
        self._threads[0].submit(self._read_batch, loop, batch)

    # -- reader / writer threads -----------------------------------------------------------------

    def _read_batch(self, loop: asyncio.AbstractEventLoop, batch: Waiters) -> None:
        outcome: dict[str, Profile] | Exception
        try:
            outcome = self._translated(self._select, list(batch))
        except Exception as exc:
            outcome = exc
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody is waiting any more
            loop.call_soon_threadsafe(self._deliver, batch, outcome)

    def _open_writer(self) -> None:
        if not self._create and not self.path.exists():
            raise StoreError(f"sqlite {self.path}: the database file does not exist: {NOT_CREATED}")
        conn = self._connect()
        try:
            if not self._create:
                _check_not_empty(conn, self.path)  # before WAL mode writes a header into it
            mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if mode != "wal":
                raise StoreError(f"sqlite {self.path}: cannot enable WAL (journal_mode={mode})")
            conn.execute("PRAGMA synchronous=FULL")
            self.schema = _migrate(conn, self.path, upgrade=self._upgrade)
            self._guard = FileGuard(self.path)
        except BaseException:
            conn.close()
            raise
        self._wconn = conn

    def _open_reader(self) -> None:
        conn = self._connect()
        try:
            conn.execute("PRAGMA query_only=ON")
            conn.execute(f"PRAGMA mmap_size={int(self._mmap_size)}")
            conn.execute(f"PRAGMA cache_size=-{READER_CACHE_KIB}")
            conn.execute("SELECT 1 FROM profiles LIMIT 0").fetchall()
        except BaseException:
            conn.close()
            raise
        self._rconn = conn

    def _connect(self) -> sqlite3.Connection:
        # timeout= is SQLite's busy timeout; isolation_level=None lets us issue BEGIN/COMMIT ourselves.
        return sqlite3.connect(self.path, timeout=self._busy_timeout, isolation_level=None)

    def _close_reader(self) -> None:
        conn, self._rconn = self._rconn, None
        if conn is not None:
            conn.close()

    def _close_writer(self) -> None:
        conn, self._wconn = self._wconn, None
        guard, self._guard = self._guard, None
        if conn is not None:
            conn.close()
        if guard is not None:
            # Last: closing any descriptor of the file drops this process's POSIX locks on it.
            guard.close()

    def _select(self, ids: list[str]) -> dict[str, Profile]:
        conn = _require(self._rconn)
        found: dict[str, Profile] = {}
        for start in range(0, len(ids), READ_CHUNK):
            chunk = ids[start : start + READ_CHUNK]
            size = next(n for n in _BUCKETS if n >= len(chunk))
            chunk += chunk[-1:] * (size - len(chunk))
            for row in conn.execute(_SELECTS[size], chunk):
                # The row is (recipient_id, attributes, version, updated_at): Profile's own layout.
                found[row[0]] = _new_tuple(Profile, row)
        return found

    def _count(self) -> int:
        count: int = _require(self._rconn).execute("SELECT count(*) FROM profiles").fetchone()[0]
        return count

    def _ping(self) -> None:
        self._check_file()
        _require(self._rconn).execute("SELECT 1 FROM profiles LIMIT 1").fetchall()

    def _upsert(self, rows: Sequence[tuple[str, bytes]], now: float) -> int:
        conn = _require(self._wconn)
        before = conn.total_changes
        self._check_file()
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.executemany(_UPSERT, [(rid, attributes, now) for rid, attributes in rows])
            conn.execute("COMMIT")
        except BaseException:
            _rollback(conn)
            raise
        self._check_file()
        return conn.total_changes - before

    # -- helpers ---------------------------------------------------------------------------------

    def _open_threads(self) -> tuple[ThreadPoolExecutor, ThreadPoolExecutor]:
        if self._threads is None:
            raise StoreError("store is not open")
        return self._threads

    async def _run(self, executor: ThreadPoolExecutor, fn: Callable[..., T], *args: object) -> T:
        return await asyncio.get_running_loop().run_in_executor(executor, self._translated, fn, *args)

    def _translated(self, fn: Callable[..., T], *args: object) -> T:
        """The error boundary: runs on a store thread and turns sqlite3 errors into StoreError."""
        try:
            return fn(*args)
        except sqlite3.Error as exc:
            code = getattr(exc, "sqlite_errorcode", None) or 0
            if self._guard is not None and code & 0xFF in _CORRUPT_CODES:
                self._guard.corrupt()
            raise StoreError(f"sqlite {self.path}: {exc}") from exc


_CORRUPT_CODES = frozenset({sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB})


def _check_not_empty(conn: sqlite3.Connection, path: Path) -> None:
    version: int = conn.execute("PRAGMA user_version").fetchone()[0]
    check_version(version, SCHEMA_VERSION, f"sqlite {path}", upgrade=False, create=False)


def _migrate(conn: sqlite3.Connection, path: Path, *, upgrade: bool) -> tuple[int, int]:
    """Bring the schema to ``SCHEMA_VERSION``; returns (version found, version now)."""
    version: int = conn.execute("PRAGMA user_version").fetchone()[0]
    check_version(version, SCHEMA_VERSION, f"sqlite {path}", upgrade=upgrade, backup="the file")
    for target in range(version + 1, SCHEMA_VERSION + 1):
        conn.execute("BEGIN IMMEDIATE")
        try:
            for statement in _MIGRATIONS[target]:
                conn.execute(statement)
            conn.execute(f"PRAGMA user_version={target}")
            conn.execute("COMMIT")
        except BaseException:
            _rollback(conn)
            raise
    return version, SCHEMA_VERSION


def _rollback(conn: sqlite3.Connection) -> None:
    # A failed BEGIN leaves no transaction; ROLLBACK would then raise and hide the real error.
    if conn.in_transaction:
        conn.execute("ROLLBACK")


def _require(conn: sqlite3.Connection | None) -> sqlite3.Connection:
    if conn is None:
        raise StoreError("store is closed")
    return conn
