"""Copy every table of one store into another (SQLite -> PostgreSQL, or any other pair).

Each table is read in key order, ``batch_size`` rows at a time, and written in one transaction per
batch, so memory stays flat and an interrupted copy can simply be run again (a row already in the
target is replaced). A target that already holds rows is refused unless ``into_non_empty``: copying
into a store in use would mix two stores' data. At the end each table's rows are counted on both sides.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from app.errors import OpentimeError
from app.store.base import Store
from app.store.tables import TABLES


class CopyError(OpentimeError):
    """The copy was refused, or its counts do not add up."""


@dataclass(frozen=True, slots=True)
class Copied:
    table: str
    source_rows: int
    target_rows: int  # after the copy


async def copy_store(
    source: Store,
    target: Store,
    *,
    batch_size: int = 5000,
    into_non_empty: bool = False,
    progress: Callable[[str, int, int], None] | None = None,
) -> list[Copied]:
    """Copy every table of ``source`` into ``target`` (both open); ``progress(table, done, total)``."""
    before = {table: await target.transfer.count(table) for table in TABLES}
    if not into_non_empty and any(before.values()):
        held = ", ".join(f"{table}: {n}" for table, n in before.items() if n)
        raise CopyError(f"the target store is not empty ({held}); pass --into-non-empty to copy anyway")
    copied = []
    for table in TABLES:
        total = await source.transfer.count(table)
        done, after = 0, None
        while rows := await source.transfer.read(table, after, batch_size):
            await target.transfer.write(table, rows)
            done, after = done + len(rows), rows[-1][0]
            if progress is not None:
                progress(table, done, total)
        copied.append(Copied(table, total, await target.transfer.count(table)))
    _verify(copied, before, into_non_empty)
    return copied


def _verify(copied: list[Copied], before: dict[str, int], into_non_empty: bool) -> None:
    for c in copied:
        # Into an empty target the counts must match; else the target holds at least the source's rows.
        short = c.target_rows < c.source_rows or c.target_rows > c.source_rows + before[c.table]
        if short or (not into_non_empty and c.target_rows != c.source_rows):
            raise CopyError(
                f"{c.table}: {c.source_rows} rows in the source but {c.target_rows} in the target after"
                " the copy: the source changed during the copy, or a write was lost; run it again"
            )
