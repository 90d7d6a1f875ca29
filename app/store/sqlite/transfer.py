"""Whole-table reads and writes of a SQLite store, for ``opentime db copy``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from app.store.tables import Row, as_bytes, check_table

if TYPE_CHECKING:
    import sqlite3

    from app.store.sqlite.profiles import SQLiteProfileStore


class SQLiteTransfer:
    """The ``TableTransfer`` of a SQLite store: reads on the reader thread, each write one transaction."""

    def __init__(self, store: SQLiteProfileStore) -> None:
        self._store = store

    async def count(self, table: str) -> int:
        check_table(table)
        return await self._store.run_read(
            lambda conn: int(conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0])
        )

    async def read(self, table: str, after: str | None, limit: int) -> list[Row]:
        columns = check_table(table)
        key = columns[0]
        where, args = ("", (limit,)) if after is None else (f"WHERE {key} > ?", (after, limit))
        query = f"SELECT {', '.join(columns)} FROM {table} {where} ORDER BY {key} LIMIT ?"
        rows = await self._store.run_read(lambda conn: conn.execute(query, args).fetchall())
        return as_bytes(table, rows)

    async def write(self, table: str, rows: Sequence[Row]) -> None:
        columns = check_table(table)
        query = (
            f"INSERT OR REPLACE INTO {table} ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})"
        )
        await self._store.run_write(lambda conn: _write(conn, query, rows))


def _write(conn: sqlite3.Connection, query: str, rows: Sequence[Row]) -> None:
    conn.executemany(query, rows)
