"""Whole-table reads and writes of a PostgreSQL store, for ``opentime db copy``: COPY in, keyset out."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from app.store.tables import Row, as_bytes, check_table

if TYPE_CHECKING:
    from app.store.postgres.store import PostgresStore


class PostgresTransfer:
    """The ``TableTransfer`` of a PostgreSQL store."""

    def __init__(self, store: PostgresStore) -> None:
        self._store = store

    async def count(self, table: str) -> int:
        check_table(table)
        async with self._store.connection() as conn:
            count: int = await conn.fetchval(f"SELECT count(*) FROM {table}")
        return count

    async def read(self, table: str, after: str | None, limit: int) -> list[Row]:
        columns = check_table(table)
        key = columns[0]
        where = "" if after is None else f"WHERE {key} > $2"
        query = f"SELECT {', '.join(columns)} FROM {table} {where} ORDER BY {key} LIMIT $1"
        async with self._store.connection() as conn:
            rows = await conn.fetch(query, limit, *(() if after is None else (after,)))
        return as_bytes(table, [tuple(row) for row in rows])

    async def write(self, table: str, rows: Sequence[Row]) -> None:
        columns = check_table(table)
        if not rows:
            return
        stage = f"copy_{table}"
        updates = ", ".join(f"{c} = excluded.{c}" for c in columns[1:])
        async with self._store.transaction() as conn:
            await conn.execute(f"CREATE TEMP TABLE {stage} (LIKE {table} INCLUDING DEFAULTS) ON COMMIT DROP")
            await conn.copy_records_to_table(stage, records=as_bytes(table, rows), columns=list(columns))
            await conn.execute(
                f"INSERT INTO {table} ({', '.join(columns)}) SELECT {', '.join(columns)} FROM {stage}"
                f" ON CONFLICT ({columns[0]}) DO UPDATE SET {updates}"
            )
