"""SQLite-specific behaviour of the store; what every backend must do is in tests/contract/."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import pytest
from click.testing import CliRunner
from starlette.testclient import TestClient

from app.app import create_app
from app.cli.main import main
from app.config import Settings
from app.store import SQLiteProfileStore, StoreError, open_store
from app.store.base import Profile
from app.store.sqlite.profiles import _MIGRATIONS, READER_CACHE_KIB, SCHEMA_VERSION


class Clock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "profiles.db"


@pytest.fixture
async def store(db_path: Path, clock: Clock) -> AsyncIterator[SQLiteProfileStore]:
    store = SQLiteProfileStore(db_path, clock=clock)
    await store.open()
    yield store
    await store.close()


pytestmark = pytest.mark.anyio


async def test_reader_keeps_a_larger_page_cache(store: SQLiteProfileStore) -> None:
    # Negative: KiB. Interior B-tree pages of a large store stay cached instead of being re-read.
    size = await store.run_read(lambda conn: conn.execute("PRAGMA cache_size").fetchone()[0])
    assert size == -READER_CACHE_KIB


async def test_cancelled_get_leaves_the_batch_intact(store: SQLiteProfileStore) -> None:
    await store.upsert_many([("a", b"{}")])
    doomed = asyncio.ensure_future(store.get("a"))
    other = asyncio.ensure_future(store.get("a"))
    await asyncio.sleep(0)
    doomed.cancel()
    assert (await other) is not None
    assert doomed.cancelled()


async def test_version_bumps_only_on_change(store: SQLiteProfileStore, clock: Clock) -> None:
    await store.upsert_many([("a", b'{"x":1}')])
    clock.now += 60
    assert await store.upsert_many([("a", b'{"x":1}')]) == 0
    assert await store.get("a") == Profile("a", b'{"x":1}', 1, 1_700_000_000.0)
    assert await store.upsert_many([("a", b'{"x":2}')]) == 1
    assert await store.get("a") == Profile("a", b'{"x":2}', 2, 1_700_000_060.0)


async def test_wal_schema_and_durability_settings(store: SQLiteProfileStore, db_path: Path) -> None:
    conn = sqlite3.connect(db_path)
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        sql = conn.execute("SELECT sql FROM sqlite_master WHERE name = 'profiles'").fetchone()[0]
    finally:
        conn.close()
    assert "WITHOUT ROWID" in sql
    assert "field_times" in sql


async def test_failing_row_rolls_back_the_whole_batch(store: SQLiteProfileStore) -> None:
    await store.upsert_many([("a", b'{"v":1}')])
    # The third row violates NOT NULL after two rows already went in: none of them may stay.
    poisoned = [("a", b'{"v":2}'), ("b", b"{}"), ("c", None), ("d", b"{}")]
    with pytest.raises(StoreError, match="NOT NULL"):
        await store.upsert_many(poisoned)  # type: ignore[arg-type]
    assert await store.get("a") == Profile("a", b'{"v":1}', 1, 1_700_000_000.0)
    assert await store.count() == 1
    assert await store.upsert_many([("b", b"{}")]) == 1  # the writer is usable again


@pytest.fixture
def corrupt_db(db_path: Path) -> Path:
    db_path.write_bytes(b"this is not a database" * 100)
    return db_path


async def test_corrupt_file_raises_store_error(corrupt_db: Path) -> None:
    store = SQLiteProfileStore(corrupt_db)
    with pytest.raises(StoreError, match="not a database"):
        await store.open()
    with pytest.raises(StoreError, match="not open"):
        await store.get("a")


async def test_unopenable_path_raises_store_error(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="unable to open"):
        await SQLiteProfileStore(tmp_path / "missing-dir" / "p.db").open()


async def test_newer_schema_is_refused(db_path: Path) -> None:
    conn = sqlite3.connect(db_path)
    conn.execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}")
    conn.close()
    with pytest.raises(StoreError, match="newer"):
        await SQLiteProfileStore(db_path).open()


async def test_read_error_fails_every_waiter(store: SQLiteProfileStore, db_path: Path) -> None:
    conn = sqlite3.connect(db_path)
    conn.execute("DROP TABLE profiles")
    conn.close()
    results = await asyncio.gather(*(store.get(f"r{i}") for i in range(10)), return_exceptions=True)
    assert all(isinstance(r, StoreError) for r in results)
    with pytest.raises(StoreError):
        await store.ping()
    with pytest.raises(StoreError):
        await store.upsert_many([("a", b"{}")])


async def test_closed_store_refuses_work_and_fails_queued_gets(db_path: Path) -> None:
    store = SQLiteProfileStore(db_path)
    await store.open()
    queued = asyncio.ensure_future(store.get("a"))
    await asyncio.sleep(0)  # get() has queued, its batch is not yet sent
    await store.close()
    with pytest.raises(StoreError, match="closed"):
        await queued
    for call in (store.get("a"), store.count(), store.upsert_many([("a", b"{}")])):
        with pytest.raises(StoreError, match="not open"):
            await call
    await store.close()  # closing twice is harmless


async def test_reads_are_not_blocked_by_an_open_write(store: SQLiteProfileStore, db_path: Path) -> None:
    await store.upsert_many([("a", b"{}")])
    other_writer = sqlite3.connect(db_path, isolation_level=None)
    try:
        other_writer.execute("BEGIN IMMEDIATE")
        other_writer.execute("INSERT INTO profiles VALUES ('b', x'7b7d', '{}', 1, 0)")
        # WAL: readers see the last commit and never wait for the writer (busy_timeout would be 5 s).
        async with asyncio.timeout(1):
            assert await store.get("a") is not None
            assert await store.get("b") is None
        other_writer.execute("COMMIT")
    finally:
        other_writer.close()
    assert await store.get("b") is not None


async def test_reads_during_a_large_write(store: SQLiteProfileStore) -> None:
    rows = [(f"r{i}", b'{"big":"' + b"x" * 200 + b'"}') for i in range(20_000)]
    write = asyncio.ensure_future(store.upsert_many(rows))
    seen = 0
    while not write.done():
        profiles = await asyncio.gather(*(store.get(f"r{i}") for i in (0, 9_999, 19_999)))
        # One transaction: a reader sees all of it or none of it.
        assert len({p is None for p in profiles}) == 1
        seen += 1
    assert await write == 20_000
    assert seen > 0
    assert await store.count() == 20_000


async def test_open_store_builds_sqlite_store(tmp_path: Path) -> None:
    store = open_store(f"sqlite:///{tmp_path}/x.db")  # tmp_path is absolute: four slashes in total
    assert isinstance(store, SQLiteProfileStore)
    assert store.path == tmp_path / "x.db"
    await store.open()
    await store.ping()
    await store.close()


def test_open_store_url_forms() -> None:
    relative = open_store("sqlite:///data/opentime.db")
    assert isinstance(relative, SQLiteProfileStore)
    assert relative.path == Path("data/opentime.db")
    absolute = open_store("sqlite:////var/lib/opentime.db")
    assert isinstance(absolute, SQLiteProfileStore)
    assert absolute.path == Path("/var/lib/opentime.db")


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("postgresql://opentime:hunter2@db:port/opentime", "invalid port"),
        ("mysql://db/x", "unsupported database URL scheme 'mysql'"),
        ("opentime.db", "must look like"),
        ("sqlite://host/x.db", "no host"),
        ("sqlite:///", "no file name"),
        ("sqlite:///x.db?mode=ro", "options are not supported"),
        ("sqlite:///:memory:", "in-memory"),
    ],
)
def test_open_store_rejects_bad_urls(url: str, message: str) -> None:
    with pytest.raises(ValueError, match=message) as info:
        open_store(url)
    assert "hunter2" not in str(info.value)  # URLs may hold passwords: never echo them


@pytest.mark.anyio
async def test_run_write_commits_or_rolls_back_as_one_transaction(tmp_path: Path) -> None:
    store = SQLiteProfileStore(tmp_path / "p.db")
    await store.open()
    try:
        insert = "INSERT INTO api_keys VALUES (?, 'n', x'00', 'render', 0, NULL)"
        await store.run_write(lambda conn: conn.execute(insert, ("k1",)))

        def two_then_fail(conn: sqlite3.Connection) -> None:
            conn.execute(insert, ("k2",))
            conn.execute(insert, ("k1",))  # duplicate key: the whole function rolls back

        with pytest.raises(StoreError):
            await store.run_write(two_then_fail)
        rows = await store.run_read(lambda conn: conn.execute("SELECT key_id FROM api_keys").fetchall())
        assert rows == [("k1",)]
    finally:
        await store.close()


def old_store(path: Path, version: int = 1) -> None:
    """A store as an earlier release left it: the migrations up to ``version`` only, one profile."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        for target in range(1, version + 1):
            for statement in _MIGRATIONS[target]:
                conn.execute(statement)
            conn.execute(f"PRAGMA user_version={target}")
        conn.execute("INSERT INTO profiles VALUES ('kept', ?, '{}', 1, 1.0)", (b'{"x":1}',))
    finally:
        conn.close()


async def test_an_older_schema_is_refused_with_the_command_that_upgrades_it(db_path: Path) -> None:
    old_store(db_path)
    with pytest.raises(StoreError, match=r"schema version 1 is older .* run `opentime db upgrade`"):
        await SQLiteProfileStore(db_path).open()
    upgraded = SQLiteProfileStore(db_path, upgrade=True)
    await upgraded.open()
    try:
        assert upgraded.schema == (1, SCHEMA_VERSION)
        assert await upgraded.get("kept") == Profile("kept", b'{"x":1}', 1, 1.0)  # data survives
    finally:
        await upgraded.close()
    again = SQLiteProfileStore(db_path)
    await again.open()  # now current: opens as usual
    assert again.schema == (SCHEMA_VERSION, SCHEMA_VERSION)
    await again.close()


async def test_a_new_store_is_created_at_the_newest_schema(tmp_path: Path) -> None:
    store = SQLiteProfileStore(tmp_path / "new.db")
    await store.open()
    assert store.schema == (0, SCHEMA_VERSION)
    await store.close()


def test_db_upgrade_command(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    old_store(path, version=2)
    url = f"sqlite:///{path}"
    runner = CliRunner()
    result = runner.invoke(main, ["db", "upgrade", "--database-url", url])
    assert result.exit_code == 0, result.output
    assert f"schema version 2 -> {SCHEMA_VERSION}: upgraded" in result.stdout
    result = runner.invoke(main, ["db", "upgrade", "--database-url", url])
    assert result.stdout.strip().endswith(f"schema version {SCHEMA_VERSION}: up to date")
    path.write_bytes(b"not a database" * 100)
    result = runner.invoke(main, ["db", "upgrade", "--database-url", url])
    assert result.exit_code == 2 and "not a database" in result.stderr


def test_the_server_refuses_to_start_on_an_older_schema(settings: Settings, tmp_path: Path) -> None:
    path = tmp_path / "old-server.db"
    old_store(path)
    app = create_app(replace(settings, database_url=f"sqlite:///{path}"))
    with pytest.raises(StoreError, match="run `opentime db upgrade`"), TestClient(app):
        pass


async def test_writes_into_a_deleted_file_are_refused(tmp_path: Path) -> None:
    # Incident: a file deleted under the running store took writes (into an inode nobody opens again).
    path = tmp_path / "gone.db"
    store = SQLiteProfileStore(path)
    await store.open()
    try:
        assert await store.upsert_many([("r1", b"{}")]) == 1
        path.unlink()
        with pytest.raises(StoreError, match="the database file was deleted"):
            await store.upsert_many([("r2", b"{}")])
        with pytest.raises(StoreError):
            await store.ping()
        assert store.problem == "deleted"
    finally:
        await store.close()


async def test_a_missing_or_empty_file_is_refused_without_create(tmp_path: Path) -> None:
    missing = SQLiteProfileStore(tmp_path / "missing.db", create=False)
    with pytest.raises(StoreError, match="does not exist: create it with `opentime db init`"):
        await missing.open()
    assert not (tmp_path / "missing.db").exists()
    (tmp_path / "empty.db").touch()
    empty = SQLiteProfileStore(tmp_path / "empty.db", create=False)
    with pytest.raises(StoreError, match="holds no Opentime store"):
        await empty.open()
