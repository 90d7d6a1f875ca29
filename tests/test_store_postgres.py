"""What the PostgreSQL store does beyond the contract suite: schema versions, concurrent starts,
errors without the password, COPY imports through ``opentime import``, and ``opentime db copy``."""

from __future__ import annotations

import asyncio
from pathlib import Path

import orjson
import pytest
from click.testing import CliRunner

from app.cli.main import main
from app.store import open_store
from app.store.base import ApiKeyRecord, Profile, StoreError, Submission
from app.store.postgres.schema import MIGRATIONS, SCHEMA_VERSION
from app.store.tables import TABLES
from tests.contract.conftest import NOW, event
from tests.pg import query
from tests.servers import free_port

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def old_schema(url: str, version: int) -> None:
    """A database as an earlier release left it: the migrations up to ``version`` only, one profile."""
    statements = [s for target in range(1, version + 1) for s in MIGRATIONS[target]]
    statements += [
        "CREATE TABLE schema_version (version integer NOT NULL)",
        "INSERT INTO profiles VALUES ('kept', '{\"x\":1}'::bytea, '{}'::bytea, 1, 1.0)",
    ]
    for statement in statements:
        query(url, statement)
    query(url, "INSERT INTO schema_version VALUES ($1)", version)


async def test_a_new_database_is_created_at_the_newest_schema_by_concurrent_starts(pg_url: str) -> None:
    stores = [open_store(pg_url) for _ in range(4)]
    await asyncio.gather(*(store.open() for store in stores))  # one creates it, the others wait and see it
    try:
        assert (
            sorted(store.schema or (-1, -1) for store in stores)
            == [(0, SCHEMA_VERSION)] + [(SCHEMA_VERSION, SCHEMA_VERSION)] * 3
        )
    finally:
        await asyncio.gather(*(store.close() for store in stores))
    assert query(pg_url, "SELECT version FROM schema_version") == [(SCHEMA_VERSION,)]


async def test_an_older_schema_is_refused_until_opentime_db_upgrade(pg_url: str) -> None:
    old_schema(pg_url, 1)
    with pytest.raises(StoreError, match=r"schema version 1 is older .* run `opentime db upgrade`"):
        await open_store(pg_url).open()
    result = await asyncio.to_thread(CliRunner().invoke, main, ["db", "upgrade", "--database-url", pg_url])
    assert result.exit_code == 0, result.output
    assert f"schema version 1 -> {SCHEMA_VERSION}: upgraded" in result.stdout
    store = open_store(pg_url)
    await store.open()
    try:
        assert store.schema == (SCHEMA_VERSION, SCHEMA_VERSION)
        assert await store.profiles.get("kept") == Profile("kept", b'{"x":1}', 1, 1.0)  # data survives
    finally:
        await store.close()


async def test_a_newer_schema_is_always_refused(pg_url: str) -> None:
    store = open_store(pg_url)
    await store.open()
    await store.close()
    query(pg_url, "UPDATE schema_version SET version = $1", SCHEMA_VERSION + 1)
    for upgrade in (False, True):
        with pytest.raises(StoreError, match="is newer than this Opentime knows"):
            await open_store(pg_url, upgrade=upgrade).open()


async def test_errors_name_the_server_but_never_the_password() -> None:
    port = free_port()  # nothing listens there
    url = f"postgresql://opentime:s3cret-pw@127.0.0.1:{port}/test"
    with pytest.raises(StoreError) as caught:
        await open_store(url, timeout_ms=2000).open()
    assert f"postgresql opentime@127.0.0.1:{port}/test" in str(caught.value)
    assert "s3cret-pw" not in str(caught.value) and caught.value.__cause__ is None
    result = await asyncio.to_thread(CliRunner().invoke, main, ["db", "upgrade", "--database-url", url])
    assert result.exit_code == 2 and "s3cret-pw" not in result.output


async def test_opentime_import_copies_rows_in_and_a_rerun_changes_nothing(
    pg_url: str, tmp_path: Path
) -> None:
    rows = [{"recipient_id": f"c{i}", "n": i} for i in range(2500)] + [{"recipient_id": "c7", "n": "last"}]
    path = tmp_path / "people.jsonl"
    path.write_bytes(b"\n".join(orjson.dumps(row) for row in rows))
    args = ["import", str(path), "--database-url", pg_url, "--batch-size", "1000"]
    first = await asyncio.to_thread(CliRunner().invoke, main, args)
    assert first.exit_code == 0, first.output
    assert "loaded (new or changed): 2500, unchanged: 0" in first.stdout
    again = await asyncio.to_thread(CliRunner().invoke, main, args)
    assert "loaded (new or changed): 0, unchanged: 2500" in again.stdout
    assert query(pg_url, "SELECT attributes, version FROM profiles WHERE recipient_id = 'c7'") == [
        (b'{"n":"last"}', 1)
    ]


async def filled_sqlite(path: Path) -> str:
    """A SQLite store with a row in every table, field times and versions that are not the defaults."""
    url = f"sqlite:///{path}"
    store = open_store(url, clock=lambda: NOW)
    await store.open()
    try:
        await store.profiles.upsert_many([(f"r{i}", orjson.dumps({"i": i})) for i in range(1234)])
        await store.events.commit([event("e1", "r1", tier="gold"), event("e2", "r2", city="Oslo")], NOW)
        payload = orjson.dumps({"rating": "4"})
        form = Submission("s1", "demo", "rate", "r3", payload, ((("prefs", "rating"), "4"),))
        await store.forms.save(form, NOW)
        await store.api_keys.insert(
            ApiKeyRecord("0123abcd", "esp", frozenset({"render"}), 5.0, None, b"h" * 32)
        )
        await store.api_keys.revoke("0123abcd", 6.0)
    finally:
        await store.close()
    return url


async def everything(url: str) -> dict[str, list[tuple[object, ...]]]:
    store = open_store(url)
    await store.open()
    try:
        return {table: sorted(await store.transfer.read(table, None, 100_000)) for table in TABLES}
    finally:
        await store.close()


async def test_db_copy_moves_every_table_from_sqlite_to_postgres(pg_url: str, tmp_path: Path) -> None:
    source = await filled_sqlite(tmp_path / "old.db")
    args = ["db", "copy", "--from", source, "--to", pg_url, "--batch-size", "500"]
    result = await asyncio.to_thread(CliRunner().invoke, main, args)
    assert result.exit_code == 0, result.output
    assert "profiles: 1234 rows copied (1234 in the target)" in result.stdout
    assert "profiles: 1000/1234" in result.stderr  # progress, batch by batch
    copied = await everything(pg_url)
    assert copied == await everything(source)
    assert len(copied["events"]) == 2 and len(copied["form_submissions"]) == 1
    profile = next(row for row in copied["profiles"] if row[0] == "r1")
    assert b"gold" in profile[1] and b"e1" in profile[2] and profile[3] == 2  # field times, version
    # The copy keeps the idempotency record: a replayed event is still a duplicate on PostgreSQL.
    store = open_store(pg_url)
    await store.open()
    try:
        assert await store.events.commit([event("e1", "r1", tier="gold")], NOW) == ["duplicate"]
    finally:
        await store.close()
    refused = await asyncio.to_thread(CliRunner().invoke, main, args)
    assert refused.exit_code == 2 and "not empty" in refused.stderr and "--into-non-empty" in refused.stderr
    forced = await asyncio.to_thread(CliRunner().invoke, main, [*args, "--into-non-empty"])
    assert forced.exit_code == 0, forced.output
    assert await everything(pg_url) == copied


async def test_db_copy_works_the_other_way_too(pg_url: str, tmp_path: Path) -> None:
    source = await filled_sqlite(tmp_path / "old.db")
    assert (
        await asyncio.to_thread(CliRunner().invoke, main, ["db", "copy", "--from", source, "--to", pg_url])
    ).exit_code == 0
    back = f"sqlite:///{tmp_path / 'back.db'}"
    result = await asyncio.to_thread(CliRunner().invoke, main, ["db", "copy", "--from", pg_url, "--to", back])
    assert result.exit_code == 0, result.output
    assert await everything(back) == await everything(source)
