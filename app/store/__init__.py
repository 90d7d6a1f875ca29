"""Store backends and the factory that picks one from a database URL; interfaces in ``base``."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

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


def open_store(database_url: str, *, clock: Callable[[], float] = time.time, upgrade: bool = False) -> Store:
    """Build the store named by ``database_url``; the caller (the app lifespan) awaits ``open()``.

    ``sqlite:///relative/path.db`` is relative to the working directory,
    ``sqlite:////absolute/path.db`` is absolute. A new (empty) store is created at the newest schema;
    an older schema is refused unless ``upgrade`` (``opentime db upgrade``), a newer one always.
    """
    scheme, sep, rest = database_url.partition("://")
    # Only the scheme is echoed back: a PostgreSQL URL may carry a password.
    if not sep:
        raise ValueError("database URL must look like sqlite:///path/to/opentime.db")
    if scheme in {"postgres", "postgresql"}:
        raise ValueError("PostgreSQL is not supported yet; use sqlite:///path/to/opentime.db")
    if scheme != "sqlite":
        raise ValueError(f"unsupported database URL scheme {scheme!r}; use sqlite:///path/to/opentime.db")
    return SQLiteProfileStore(_sqlite_path(rest), clock=clock, upgrade=upgrade)


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
