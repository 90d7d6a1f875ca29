"""Store backends and the factory that picks one from a database URL; interfaces in ``base``."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

from app.config import DATABASE_POOL_SIZE, DATABASE_TIMEOUT_MS
from app.store.base import Profile, ProfileRepository, Store, StoreError
from app.store.sqlite.profiles import SQLiteProfileStore

__all__ = [
    "Profile",
    "ProfileRepository",
    "SQLiteProfileStore",
    "Store",
    "StoreError",
    "open_store",
]


def open_store(
    database_url: str,
    *,
    clock: Callable[[], float] = time.time,
    upgrade: bool = False,
    create: bool = True,
    timeout_ms: int = DATABASE_TIMEOUT_MS,
    pool_size: int = DATABASE_POOL_SIZE,
) -> Store:
    """Build the store named by ``database_url``; the caller (the app lifespan) awaits ``open()``.

    ``sqlite:///relative/path.db`` is relative to the working directory,
    ``sqlite:////absolute/path.db`` is absolute; ``postgresql://`` (or ``postgres://``) URLs are
    asyncpg's, where other query parameters (e.g. ``?search_path=opentime``) are server settings.
    ``timeout_ms`` and ``pool_size`` apply to PostgreSQL. A new (empty) store is created at the newest
    schema; an older schema is refused unless ``upgrade`` (``opentime db upgrade``), a newer one always.
    Without ``create`` (a server, unless ``create_database``) a missing or empty store is refused
    instead of created: ``opentime db init`` creates one.
    """
    scheme, sep, rest = database_url.partition("://")
    # Only the scheme is echoed back: a PostgreSQL URL may carry a password.
    if not sep:
        raise ValueError("database URL must look like sqlite:///path/to/opentime.db")
    if scheme in {"postgres", "postgresql"}:
        _check_postgres_url(database_url)
        # Imported here: a SQLite deployment never loads asyncpg.
        from app.store.postgres.store import PostgresStore

        return PostgresStore(
            database_url,
            clock=clock,
            upgrade=upgrade,
            create=create,
            timeout_seconds=timeout_ms / 1000,
            pool_size=pool_size,
        )
    if scheme != "sqlite":
        raise ValueError(
            f"unsupported database URL scheme {scheme!r}; use sqlite:///path/to/opentime.db"
            " or postgresql://user@host/db"
        )
    return SQLiteProfileStore(_sqlite_path(rest), clock=clock, upgrade=upgrade, create=create)


def _sqlite_path(rest: str) -> Path:
    if not rest.startswith("/"):
        raise ValueError("sqlite URLs take no host: use sqlite:///relative.db or sqlite:////absolute.db")
    path = rest[1:]
    if not path or path.endswith("/"):
        raise ValueError("sqlite URL has no file name: use sqlite:///relative.db or sqlite:////absolute.db")
    if "?" in path or "#" in path:
        raise ValueError("sqlite URL options are not supported; give a plain file path")
    if path == ":memory:":
        raise ValueError("in-memory SQLite is not supported: the reader and writer need a shared file")
    return Path(path)


def _check_postgres_url(url: str) -> None:
    try:
        urlsplit(url).port  # noqa: B018  (parsing it is the check)
    except ValueError:
        raise ValueError("postgresql URL has an invalid port") from None
