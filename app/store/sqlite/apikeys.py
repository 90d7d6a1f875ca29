"""SQL for API keys: ``SQLiteApiKeys`` is the ``ApiKeyRepository`` of a SQLite store.

Scopes are stored as one space-separated text column; only the secret's hash is stored.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from app.store.base import ApiKeyRecord

if TYPE_CHECKING:
    import sqlite3

    from app.store.sqlite.profiles import SQLiteProfileStore

_SELECT = "SELECT key_id, name, scopes, created_at, revoked_at, secret_hash FROM api_keys"
_SELECT_ONE = _SELECT + " WHERE key_id = ?"
_SELECT_ALL = _SELECT + " ORDER BY created_at, key_id"
_INSERT = (
    "INSERT OR IGNORE INTO api_keys (key_id, name, secret_hash, scopes, created_at) VALUES (?, ?, ?, ?, ?)"
)
_REVOKE = "UPDATE api_keys SET revoked_at = ? WHERE key_id = ? AND revoked_at IS NULL"


class SQLiteApiKeys:
    """API keys in the ``api_keys`` table: reads on the reader thread, writes in one transaction each."""

    def __init__(self, store: SQLiteProfileStore) -> None:
        self._store = store

    async def insert(self, record: ApiKeyRecord) -> bool:
        return await self._store.run_write(lambda conn: _insert(conn, record))

    async def find(self, key_id: str) -> ApiKeyRecord | None:
        return await self._store.run_read(lambda conn: _select_one(conn, key_id))

    async def all(self) -> list[ApiKeyRecord]:
        return await self._store.run_read(_select_all)

    async def revoke(self, key_id: str, now: float) -> ApiKeyRecord | None:
        return await self._store.run_write(lambda conn: _revoke(conn, key_id, now))


def _insert(conn: sqlite3.Connection, record: ApiKeyRecord) -> bool:
    scopes = " ".join(sorted(record.scopes))
    row = (record.key_id, record.name, record.secret_hash, scopes, record.created_at)
    return conn.execute(_INSERT, row).rowcount == 1


def _revoke(conn: sqlite3.Connection, key_id: str, now: float) -> ApiKeyRecord | None:
    conn.execute(_REVOKE, (now, key_id))
    return _select_one(conn, key_id)


def _select_one(conn: sqlite3.Connection, key_id: str) -> ApiKeyRecord | None:
    row = conn.execute(_SELECT_ONE, (key_id,)).fetchone()
    return None if row is None else _from_row(row)


def _select_all(conn: sqlite3.Connection) -> list[ApiKeyRecord]:
    return [_from_row(row) for row in conn.execute(_SELECT_ALL)]


def _from_row(row: tuple[str, str, str, float, float | None, bytes]) -> ApiKeyRecord:
    key_id, name, scopes, created_at, revoked_at, secret_hash = row
    return ApiKeyRecord(key_id, name, frozenset(scopes.split()), created_at, revoked_at, bytes(secret_hash))
