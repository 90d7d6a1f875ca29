"""The profile store interface shared by every backend (SQLite now, PostgreSQL later)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple, Protocol, TypeVar

from app.errors import OpentimeError

T = TypeVar("T")


class StoreError(OpentimeError):
    """The store is unusable or an operation failed; backends translate their driver errors to this."""


class Profile(NamedTuple):
    """One recipient's profile.

    ``attributes`` stays orjson-encoded: a million decoded dicts cost ~2x the memory and long GC pauses.
    ``version`` bumps only when the encoded attributes really change.
    """

    recipient_id: str
    attributes: bytes
    version: int
    updated_at: float


class ReadStats:
    """Profile reads so far: ``keys / batches`` is how well lookups share their queries."""

    __slots__ = ("batches", "keys")

    def __init__(self) -> None:
        self.batches = 0  # queries (jobs) sent to the backend for profile lookups
        self.keys = 0  # distinct recipient ids those queries asked for


class ProfileStore(Protocol):
    """Async access to profiles. Implementations never do disk or network I/O on the event loop."""

    read_stats: ReadStats

    async def open(self) -> None: ...

    async def close(self) -> None: ...

    async def get(self, recipient_id: str) -> Profile | None: ...

    def lookup(self, recipient_id: str) -> asyncio.Future[Profile | None]:
        """Like ``get`` but returns the future itself (no coroutine). Call it on the event loop."""
        ...

    def fetch(self, recipient_id: str, callback: Callable[[Profile | StoreError | None], None]) -> None:
        """Call ``callback`` on the event loop with the profile, None, or the StoreError: the cheapest
        form, for the open-time path, which wakes its own waiters."""
        ...

    async def get_many(self, recipient_ids: Sequence[str]) -> dict[str, Profile]: ...

    async def upsert_many(self, rows: Sequence[tuple[str, bytes]]) -> int:
        """Insert or replace ``(recipient_id, encoded attributes)`` rows in one transaction.

        Returns how many rows were inserted or changed; rows whose bytes are identical are left alone,
        so re-running the same upsert returns 0.
        """
        ...

    async def count(self) -> int: ...

    async def ping(self) -> None:
        """Raise StoreError if the store cannot serve reads."""
        ...

    async def run_read(self, fn: Callable[[Any], T]) -> T:
        """Run ``fn(connection)`` where reads happen (another thread); for tables beyond profiles.

        The connection is the backend's own (sqlite3.Connection for SQLite): modules that pass ``fn``
        hold SQL for one backend, in ``app/store/<backend>_*.py``.
        """
        ...

    async def run_write(self, fn: Callable[[Any], T]) -> T:
        """Run ``fn(connection)`` inside one transaction, committed before this returns."""
        ...
