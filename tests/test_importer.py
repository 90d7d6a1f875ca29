from __future__ import annotations

import gzip
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import orjson
import pytest

from app.content.invalidation import LocalInvalidation
from app.ingest.import_rows import (
    BadRow,
    CsvSchema,
    HeaderError,
    ImportFileError,
    RowError,
    detect_format,
    parse_jsonl_line,
)
from app.ingest.importer import import_file, progress_total
from app.store import SQLiteProfileStore, StoreError

SECRET = "s3cret-value"  # an attribute value that must never show up in a reason


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SQLiteProfileStore]:
    store = SQLiteProfileStore(tmp_path / "profiles.db")
    await store.open()
    yield store
    await store.close()


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


async def attributes(store: SQLiteProfileStore, recipient_id: str) -> object:
    profile = await store.get(recipient_id)
    assert profile is not None
    return orjson.loads(profile.attributes)


def jsonl(*rows: object) -> str:
    return "".join(orjson.dumps(row).decode() + "\n" for row in rows)


# -- pure parsing ---------------------------------------------------------------------------------


def test_parse_jsonl_line_forms_encode_canonically() -> None:
    flat = parse_jsonl_line(b'{"recipient_id": "r1", "b": 1, "a": [2]}\n')
    nested = parse_jsonl_line(b'{"attributes": {"a": [2], "b": 1}, "recipient_id": "r1"}')
    assert flat == nested == ("r1", b'{"a":[2],"b":1}')


def test_csv_schema_types_and_empty_cells() -> None:
    schema = CsvSchema.from_header(
        ["recipient_id", "name", "age:int", "score:float", "vip:bool", "recs:json"]
    )
    assert schema.parse_row(["r1", "Ada", "42", "-1.5e2", "TRUE", '[{"sku": 1}]']) == (
        "r1",
        b'{"age":42,"name":"Ada","recs":[{"sku":1}],"score":-150.0,"vip":true}',
    )
    assert schema.parse_row(["r2", "", "", "", "0", ""]) == ("r2", b'{"vip":false}')


@pytest.mark.parametrize(
    ("header", "reason"),
    [
        (["recipient_id", "age:integer"], "unknown type suffix in column `age:integer`"),
        (["name"], "no recipient_id column"),
        (["recipient_id", "a", "a:int"], "duplicate column `a`"),
        (["recipient_id", ""], "column 2 has no name"),
        (["recipient_id:int"], "takes no type suffix"),
        (["recipient_id", ":int"], "no name before its type suffix"),
    ],
)
def test_csv_header_errors(header: list[str], reason: str) -> None:
    with pytest.raises(HeaderError, match=reason):
        CsvSchema.from_header(header)


def test_detect_format() -> None:
    assert detect_format(Path("a.ndjson.gz")) == "jsonl"
    assert detect_format(Path("A.CSV")) == "csv"
    assert detect_format(Path("dump.txt"), "ndjson") == "jsonl"
    with pytest.raises(ImportFileError, match="cannot tell the format"):
        detect_format(Path("dump.txt"))
    with pytest.raises(ImportFileError, match="unknown format"):
        detect_format(Path("a.csv"), "xml")


# -- happy paths ----------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_jsonl_import(store: SQLiteProfileStore, tmp_path: Path) -> None:
    path = write(
        tmp_path / "p.jsonl",
        "\ufeff"
        + jsonl({"recipient_id": "r1", "attributes": {"name": "Ada", "recs": [1, 2]}})
        + "\n   \n"
        + jsonl({"recipient_id": "r2", "name": "Bob", "age": 7}),
    )
    report = await import_file(store, path)
    assert report.loaded and not report.invalid
    assert (report.rows_seen, report.rows_valid, report.rows_loaded, report.unchanged) == (2, 2, 2, 0)
    assert await attributes(store, "r1") == {"name": "Ada", "recs": [1, 2]}
    assert await attributes(store, "r2") == {"name": "Bob", "age": 7}


@pytest.mark.anyio
async def test_loaded_batches_reach_the_invalidation_listeners(
    store: SQLiteProfileStore, tmp_path: Path
) -> None:
    invalidation = LocalInvalidation()
    heard: list[frozenset[str]] = []
    invalidation.subscribe(heard.append)
    path = write(tmp_path / "p.jsonl", jsonl(*({"recipient_id": f"r{i}", "n": i} for i in range(5))))
    await import_file(store, path, batch_size=3, invalidation=invalidation)
    assert heard == [frozenset({"r0", "r1", "r2"}), frozenset({"r3", "r4"})]
    await import_file(store, path, batch_size=3, invalidation=invalidation)
    assert len(heard) == 2  # nothing changed the second time


@pytest.mark.anyio
async def test_csv_import_with_types(store: SQLiteProfileStore, tmp_path: Path) -> None:
    path = write(
        tmp_path / "p.csv",
        "recipient_id,first name,age:int,score:float,vip:bool,recommendations:json,note:str\r\n"
        'r1,Ada,36,9.5,true,"[{""sku"":""A1""}]","two\nlines"\r\n'
        "r2,,,,0,,\r\n",
    )
    report = await import_file(store, path)
    assert report.loaded and report.rows_loaded == 2
    assert await attributes(store, "r1") == {
        "first name": "Ada",
        "age": 36,
        "score": 9.5,
        "vip": True,
        "recommendations": [{"sku": "A1"}],
        "note": "two\nlines",
    }
    assert await attributes(store, "r2") == {"vip": False}


@pytest.mark.anyio
async def test_gzip_import_and_progress(store: SQLiteProfileStore, tmp_path: Path) -> None:
    path = tmp_path / "p.jsonl.gz"
    path.write_bytes(gzip.compress(jsonl(*({"recipient_id": f"r{i}", "i": i} for i in range(3000))).encode()))
    advanced: list[int] = []
    report = await import_file(store, path, batch_size=1000, progress=advanced.append)
    assert report.rows_loaded == 3000
    assert sum(advanced) == progress_total(path)
    assert await store.count() == 3000


# -- invalid rows ---------------------------------------------------------------------------------

BAD_JSONL = [
    ('{"recipient_id": "r1", "a": 1,}', BadRow(1, None, "invalid JSON at column 30: trailing comma")),
    ('["r1"]', BadRow(1, None, "line is not a JSON object")),
    ('{"name": "s3cret-value"}', BadRow(1, None, "missing recipient_id")),
    ('{"recipient_id": 5}', BadRow(1, None, "recipient_id is not a string")),
    ('{"recipient_id": ""}', BadRow(1, None, "recipient_id is empty")),
    ('{"recipient_id": "' + "x" * 201 + '"}', BadRow(1, None, "recipient_id is longer than 200")),
    ('{"recipient_id": "a\\u0000b"}', BadRow(1, None, "recipient_id contains control characters")),
    ('{"recipient_id": " r1"}', BadRow(1, None, "recipient_id has leading or trailing whitespace")),
    ('{"recipient_id": "r1", "attributes": ["s3cret-value"]}', BadRow(1, "r1", "attributes is not a JSON")),
    (
        '{"recipient_id": "r1", "attributes": {}, "x": "s3cret-value"}',
        BadRow(1, "r1", "keys next to attributes (use one form or the other): 'x'"),
    ),
    (
        '{"recipient_id": "r1", "blob": "' + "s3cret-value" * 6000 + '"}',
        BadRow(1, "r1", "attributes are 72011 bytes encoded, over the 65536 limit"),
    ),
]


@pytest.mark.anyio
@pytest.mark.parametrize(("line", "expected"), BAD_JSONL)
async def test_bad_jsonl_rows(store: SQLiteProfileStore, tmp_path: Path, line: str, expected: BadRow) -> None:
    path = write(tmp_path / "p.jsonl", f"{line}\n")
    report = await import_file(store, path)
    [bad] = report.invalid
    assert (bad.line, bad.recipient_id) == (expected.line, expected.recipient_id)
    assert bad.reason.startswith(expected.reason)
    assert SECRET not in bad.reason


BAD_CSV = [
    ("r1,abc,,,,s3cret-value", BadRow(3, "r1", "bad int in column `age:int`")),
    ("r1,99999999999999999999,,,,", BadRow(3, "r1", "int beyond 64 bits in column `age:int`")),
    ("r1,,nan,,,", BadRow(3, "r1", "bad float in column `score:float`")),
    ("r1,,,yes,,", BadRow(3, "r1", "bad bool (use true/false/1/0) in column `vip:bool`")),
    (
        'r1,,,,"[1,]",',
        BadRow(3, "r1", "invalid JSON at column 3 (trailing comma is not allowed) in column `recs:json`"),
    ),
    ("r1,1", BadRow(3, None, "expected 6 cells, got 2")),
    (",1,,,,", BadRow(3, None, "recipient_id is empty")),
]


@pytest.mark.anyio
@pytest.mark.parametrize(("row", "expected"), BAD_CSV)
async def test_bad_csv_rows(store: SQLiteProfileStore, tmp_path: Path, row: str, expected: BadRow) -> None:
    header = "recipient_id,age:int,score:float,vip:bool,recs:json,name\n"
    path = write(tmp_path / "p.csv", header + "r0,1,,,,ok\n" + row + "\n")
    report = await import_file(store, path)
    assert report.invalid == [expected]
    assert not report.loaded
    assert await store.count() == 0


@pytest.mark.anyio
async def test_csv_line_numbers_follow_multiline_cells(store: SQLiteProfileStore, tmp_path: Path) -> None:
    path = write(
        tmp_path / "p.csv", 'recipient_id,note,n:int\nr1,"a\nb\nc",1\n\nr2,x,bad\nr3,"x"y,1\nr4,x,2\n'
    )
    report = await import_file(store, path)
    assert [(bad.line, bad.recipient_id) for bad in report.invalid] == [(6, "r2"), (7, None)]
    assert report.invalid[1].reason.startswith("CSV syntax error")
    assert (report.rows_seen, report.rows_valid) == (4, 2)


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("recipient_id,age:years\nr1,3\n", "unknown type suffix in column `age:years`"),
        ("", "the file is empty"),
    ],
)
async def test_csv_header_error_blocks_everything(
    store: SQLiteProfileStore, tmp_path: Path, text: str, reason: str
) -> None:
    report = await import_file(store, write(tmp_path / "p.csv", text), skip_invalid=True)
    assert [(bad.line, bad.recipient_id) for bad in report.invalid] == [(1, None)]
    assert report.invalid[0].reason.startswith(reason)
    assert not report.loaded
    assert await store.count() == 0


@pytest.mark.anyio
async def test_invalid_rows_block_the_load_by_default(store: SQLiteProfileStore, tmp_path: Path) -> None:
    path = write(tmp_path / "p.jsonl", jsonl({"recipient_id": "good", "a": 1}) + "{oops\n")
    report = await import_file(store, path)
    assert not report.loaded
    assert (report.rows_seen, report.rows_valid, report.rows_loaded, report.invalid_count) == (2, 1, 0, 1)
    assert report.invalid[0].line == 2
    assert await store.count() == 0


@pytest.mark.anyio
async def test_skip_invalid_loads_the_good_rows(store: SQLiteProfileStore, tmp_path: Path) -> None:
    path = write(tmp_path / "p.jsonl", "{oops\n" + jsonl({"recipient_id": "good", "a": 1}) + "[]\n")
    report = await import_file(store, path, skip_invalid=True)
    assert report.loaded
    assert [bad.line for bad in report.invalid] == [1, 3]
    assert report.rows_loaded == 1
    assert await attributes(store, "good") == {"a": 1}


@pytest.mark.anyio
async def test_invalid_rows_reported_are_capped(store: SQLiteProfileStore, tmp_path: Path) -> None:
    path = write(tmp_path / "p.jsonl", "[]\n" * 30)
    report = await import_file(store, path, max_reported=5)
    assert len(report.invalid) == 5
    assert report.invalid_count == 30


@pytest.mark.anyio
async def test_rerun_is_idempotent(store: SQLiteProfileStore, tmp_path: Path) -> None:
    path = write(
        tmp_path / "p.jsonl", jsonl(*({"recipient_id": f"r{i}", "i": i, "z": 0} for i in range(100)))
    )
    first = await import_file(store, path, batch_size=7)
    assert (first.rows_loaded, first.unchanged) == (100, 0)
    second = await import_file(store, path, batch_size=7)
    assert (second.rows_loaded, second.unchanged) == (0, 100)
    # Same data, keys in another order: still no change, attributes are encoded canonically.
    write(path, jsonl(*({"z": 0, "i": i, "recipient_id": f"r{i}"} for i in range(100))))
    third = await import_file(store, path)
    assert (third.rows_loaded, third.unchanged) == (0, 100)
    profile = await store.get("r5")
    assert profile is not None and profile.version == 1


@pytest.mark.anyio
async def test_duplicates_last_row_wins(store: SQLiteProfileStore, tmp_path: Path) -> None:
    rows = [{"recipient_id": "a", "v": 1}, {"recipient_id": "b", "v": 1}, {"recipient_id": "a", "v": 2}]
    rows += [{"recipient_id": "a", "v": 3}, {"recipient_id": "a"}]  # and an invalid "a" row last
    path = write(tmp_path / "p.jsonl", jsonl(*rows) + '{"recipient_id": "a", "attributes": 1}\n')
    report = await import_file(store, path, skip_invalid=True, batch_size=2)
    assert (report.rows_valid, report.duplicates, report.rows_loaded) == (5, 3, 2)
    assert await attributes(store, "a") == {}  # the last *valid* row for "a"
    again = await import_file(store, path, skip_invalid=True, batch_size=2)
    assert (again.rows_loaded, again.unchanged) == (0, 2)


class FailingStore:
    """Delegates to a real store, but the n-th upsert_many fails like a crashed transaction would."""

    def __init__(self, inner: SQLiteProfileStore, fail_on: int) -> None:
        self.inner = inner
        self.fail_on = fail_on
        self.calls = 0

    async def upsert_many(self, rows: Sequence[tuple[str, bytes]]) -> int:
        self.calls += 1
        if self.calls == self.fail_on:
            raise StoreError("disk I/O error")
        return await self.inner.upsert_many(rows)


@pytest.mark.anyio
async def test_failed_batch_leaves_whole_batches_and_rerun_completes(
    store: SQLiteProfileStore, tmp_path: Path
) -> None:
    path = write(tmp_path / "p.jsonl", jsonl(*({"recipient_id": f"r{i}", "i": i} for i in range(250))))
    with pytest.raises(StoreError):
        await import_file(FailingStore(store, fail_on=3), path, batch_size=100)  # type: ignore[arg-type]
    assert await store.count() == 200
    report = await import_file(store, path, batch_size=100)
    assert (report.rows_loaded, report.unchanged) == (50, 200)


@pytest.mark.anyio
async def test_unreadable_file(store: SQLiteProfileStore, tmp_path: Path) -> None:
    with pytest.raises(ImportFileError, match="cannot read"):
        await import_file(store, tmp_path / "missing.jsonl")
    broken = tmp_path / "p.jsonl.gz"
    broken.write_bytes(gzip.compress(b'{"recipient_id": "a"}\n' * 1000)[:-30])
    with pytest.raises(ImportFileError, match="cannot read"):
        await import_file(store, broken)
    assert await store.count() == 0


def test_row_error_carries_recipient_id() -> None:
    with pytest.raises(RowError) as info:
        parse_jsonl_line(b'{"recipient_id": "r9", "attributes": 3}')
    assert info.value.recipient_id == "r9"
