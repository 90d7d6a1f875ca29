"""API keys in PostgreSQL: ``PostgresApiKeys`` is the ``ApiKeyRepository`` of a PostgreSQL store.

Scopes are one space-separated text column, as in SQLite; only the secret's hash is stored.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from app.store.base import ApiKeyRecord

if TYPE_CHECKING:
    from app.store.postgres.store import PostgresStore

_SELECT = "SELECT key_id, name, scopes, created_at, revoked_at, secret_hash FROM api_keys"
_SELECT_ONE = _SELECT + " WHERE key_id = $1"
_SELECT_ALL = _SELECT + ' ORDER BY created_at, key_id COLLATE "C"'  # byte order, as SQLite sorts
_INSERT = """
INSERT INTO api_keys (key_id, name, secret_hash, scopes, created_at) VALUES ($1, $2, $3, $4, $5)
ON CONFLICT (key_id) DO NOTHING
"""
_REVOKE = "UPDATE api_keys SET revoked_at = $2 WHERE key_id = $1 AND revoked_at IS NULL"


class PostgresApiKeys:
    def __init__(self, store: PostgresStore) -> None:
        self._store = store

    async def insert(self, record: ApiKeyRecord) -> bool:
        scopes = " ".join(sorted(record.scopes))
        async with self._store.connection() as conn:
            status: str = await conn.execute(
                _INSERT, record.key_id, record.name, record.secret_hash, scopes, record.created_at
            )
        return status.endswith(" 1")

    async def find(self, key_id: str) -> ApiKeyRecord | None:
        async with self._store.connection() as conn:
            row = await conn.fetchrow(_SELECT_ONE, key_id)
        return None if row is None else _from_row(row)

    async def all(self) -> list[ApiKeyRecord]:
        async with self._store.connection() as conn:
            rows = await conn.fetch(_SELECT_ALL)
        return [_from_row(row) for row in rows]

    async def revoke(self, key_id: str, now: float) -> ApiKeyRecord | None:
        async with self._store.transaction() as conn:
            await conn.execute(_REVOKE, key_id, now)
            row = await conn.fetchrow(_SELECT_ONE, key_id)
        return None if row is None else _from_row(row)


def _from_row(row: Any) -> ApiKeyRecord:
    key_id, name, scopes, created_at, revoked_at, secret_hash = row
    return ApiKeyRecord(key_id, name, frozenset(scopes.split()), created_at, revoked_at, bytes(secret_hash))
