"""Bulk-load profiles from JSONL or CSV files: the library behind ``opentime import``.

Parsing is pure and lives in ``app.ingest.import_rows``; ``import_file`` reads the file twice. Pass 1
validates every row; if any is invalid and ``skip_invalid`` is false, nothing is loaded. Pass 2 loads the
valid rows in batches, one transaction each: a crash leaves whole batches, and re-running is idempotent.

Rules:
- ``recipient_id``: a string of 1..200 characters with no control characters and no surrounding
  whitespace. Whitespace is rejected rather than stripped: ids must match the tokens minted for them.
- JSONL (``.jsonl``, ``.ndjson``): one object per line, either ``{"recipient_id": .., "attributes": {..}}``
  with no other keys, or flat, where every other key is an attribute (so a flat attribute cannot be
  called ``attributes``). Blank lines are skipped.
- CSV: a header row with a ``recipient_id`` column; other columns are attributes, typed by a suffix:
  ``:int``, ``:float``, ``:bool`` (true/false/1/0), ``:json``, ``:str`` (the default, useful when a name
  itself contains a colon). An empty cell omits the attribute.
- Attributes are re-encoded with sorted keys, so the same data in another key order is not a change.
  Encoded attributes are capped at 64 KiB per row.
- A recipient id repeated in the file: the last valid row wins, earlier ones count as ``duplicates``.
- Files may be gzipped (``.gz``). Reasons never quote attribute values (personal data); they name lines,
  columns and keys. Recipient ids do appear in reports, which are for operators.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import io
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import IO

from app.content.invalidation import Invalidation
from app.ingest.import_rows import (
    BadRow,
    HeaderError,
    ImportFileError,
    Record,
    csv_records,
    detect_format,
    is_gzipped,
    jsonl_records,
)
from app.store.base import ProfileRepository

_VALIDATE_CHUNK = 5000  # rows per thread hop in pass 1


@dataclass(slots=True)
class ImportReport:
    """``invalid`` keeps the first ``max_reported`` bad rows; ``invalid_count`` counts them all."""

    rows_seen: int = 0
    rows_valid: int = 0
    rows_loaded: int = 0  # inserted or changed
    unchanged: int = 0
    invalid: list[BadRow] = field(default_factory=list)
    invalid_count: int = 0
    duplicates: int = 0
    loaded: bool = False


class _Source:
    """An open input file: its records, and how many file bytes were consumed since last asked."""

    def __init__(self, path: Path, fmt: str) -> None:
        self.path = path
        self._raw = path.open("rb", buffering=1 << 20)
        self._stream: IO[bytes] = self._raw
        if is_gzipped(path):
            self._stream = gzip.GzipFile(fileobj=self._raw)  # type: ignore[assignment]
        self._text: io.TextIOWrapper | None = None
        if fmt == "jsonl":
            self.records = jsonl_records(self._stream)
        else:
            # surrogateescape: bad UTF-8 becomes a row error (_BAD_ID_CHARS, orjson) instead of a crash.
            self._text = io.TextIOWrapper(self._stream, "utf-8-sig", "surrogateescape", newline="")
            self.records = csv_records(self._text)
        self._reported = 0

    def advanced(self) -> int:
        position = self._raw.tell()
        delta, self._reported = position - self._reported, position
        return delta

    def close(self) -> None:
        for stream in (self._text, self._stream, self._raw):
            if stream is not None:
                stream.close()


@contextlib.contextmanager
def _read_errors(path: Path) -> Iterator[None]:
    try:
        yield
    except (OSError, EOFError, zlib.error) as exc:  # gzip.BadGzipFile is an OSError
        raise ImportFileError(f"cannot read {path}: {exc}") from exc


# -- the two passes -------------------------------------------------------------------------------


@dataclass(slots=True)
class _Validation:
    report: ImportReport
    max_reported: int
    seen: set[str] = field(default_factory=set)
    last_line: dict[str, int] = field(default_factory=dict)  # only ids seen more than once
    header_failed: bool = False

    def add(self, record: Record) -> None:
        report = self.report
        report.rows_seen += 1
        if isinstance(record, BadRow):
            report.invalid_count += 1
            if len(report.invalid) < self.max_reported:
                report.invalid.append(record)
            return
        line, recipient_id, _ = record
        if recipient_id in self.seen:
            self.last_line[recipient_id] = line
        else:
            self.seen.add(recipient_id)

    def finish(self) -> ImportReport:
        report = self.report
        report.rows_valid = report.rows_seen - report.invalid_count
        report.duplicates = report.rows_valid - len(self.seen)
        self.seen.clear()
        return report


def _validate_chunk(source: _Source, state: _Validation) -> tuple[bool, int]:
    """Runs on a worker thread. Returns (more to read, bytes advanced)."""
    with _read_errors(source.path):
        n = 0
        try:
            for record in islice(source.records, _VALIDATE_CHUNK):
                state.add(record)
                n += 1
        except HeaderError as exc:
            state.header_failed = True
            state.report.invalid_count += 1
            state.report.invalid.append(BadRow(1, None, exc.reason))
            return False, source.advanced()
        return n == _VALIDATE_CHUNK, source.advanced()


def _next_batch(source: _Source, last_line: dict[str, int], size: int) -> tuple[list[tuple[str, bytes]], int]:
    """Runs on a worker thread: the next ``size`` rows to load, skipping invalid and superseded rows."""
    batch: list[tuple[str, bytes]] = []
    with _read_errors(source.path):
        for record in source.records:
            if isinstance(record, BadRow):
                continue
            line, recipient_id, attributes = record
            if last_line.get(recipient_id, line) != line:
                continue  # superseded by a later row for the same recipient
            batch.append((recipient_id, attributes))
            if len(batch) == size:
                break
    return batch, source.advanced()


async def _open(path: Path, fmt: str) -> _Source:
    with _read_errors(path):
        return await asyncio.to_thread(_Source, path, fmt)


def _stamp(path: Path) -> tuple[int, int]:
    with _read_errors(path):
        stat = path.stat()
    return stat.st_size, stat.st_mtime_ns


def progress_total(path: Path) -> int:
    """The sum of ``progress`` calls for a full import: both passes read every byte of the file."""
    return 2 * _stamp(path)[0]


async def import_file(
    profiles: ProfileRepository,
    path: Path | str,
    *,
    fmt: str | None = None,
    skip_invalid: bool = False,
    batch_size: int = 5000,
    progress: Callable[[int], None] | None = None,
    max_reported: int = 1000,
    invalidation: Invalidation | None = None,
) -> ImportReport:
    """Validate ``path`` whole, then load its valid rows into ``profiles`` in one transaction per batch.

    ``progress(n)`` is called on the event loop with the number of input-file bytes (compressed bytes
    for .gz) consumed since the last call; a full import sums to ``progress_total(path)``.
    Parsing runs on a worker thread, so the event loop stays responsive. ``invalidation`` hears of
    every batch's recipients once it is committed (a process that serves them passes its own).
    """
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    path = Path(path)
    fmt = detect_format(path, fmt)
    stamp = _stamp(path)
    state = await _validate(path, fmt, _Validation(ImportReport(), max_reported), progress)
    report = state.finish()
    if state.header_failed or (report.invalid_count and not skip_invalid):
        return report
    if _stamp(path) != stamp:
        raise ImportFileError(f"{path} changed during the import; nothing was loaded")
    await _load(profiles, path, fmt, state.last_line, batch_size, report, progress, invalidation)
    report.loaded = True
    return report


async def _validate(
    path: Path, fmt: str, state: _Validation, progress: Callable[[int], None] | None
) -> _Validation:
    source = await _open(path, fmt)
    try:
        more = True
        while more:
            more, advanced = await asyncio.to_thread(_validate_chunk, source, state)
            if progress is not None:
                progress(advanced)
    finally:
        source.close()
    return state


async def _load(
    profiles: ProfileRepository,
    path: Path,
    fmt: str,
    last_line: dict[str, int],
    batch_size: int,
    report: ImportReport,
    progress: Callable[[int], None] | None,
    invalidation: Invalidation | None,
) -> None:
    # Parsing the next batch while this one is written was measured slower (14 s -> 18 s for 1M rows):
    # the writer thread releases the GIL on every row and then queues behind the parser for it.
    source = await _open(path, fmt)
    try:
        while True:
            batch, advanced = await asyncio.to_thread(_next_batch, source, last_line, batch_size)
            if progress is not None:
                progress(advanced)
            if not batch:
                return
            changed = await profiles.upsert_many(batch)
            report.rows_loaded += changed
            if changed and invalidation is not None:
                await invalidation.recipients_changed(recipient for recipient, _ in batch)
            report.unchanged += len(batch) - changed
    finally:
        source.close()
