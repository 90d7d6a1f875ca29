"""The backend fixture every contract suite runs on: one param per store backend.

A new backend adds its name to ``BACKENDS`` and a branch to ``database_url``; the suites then run
against it unchanged, through the ``app.store.base`` protocols only. PostgreSQL runs each test in a
fresh schema (tests/pg.py), skipped when the server does not answer (failing under CI=true).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from app.ingest.events import Event, parse_event
from app.store import Store, open_store
from tests.pg import fresh_pg_url

BACKENDS = ["sqlite", "postgres"]
NOW = 1_714_557_600.0  # 2024-05-01T10:00:00Z


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name


@pytest.fixture
def database_url(backend: str, tmp_path: Path) -> Iterator[str]:
    if backend == "sqlite":
        yield f"sqlite:///{tmp_path / 'contract.db'}"  # a real file: reader and writer share it
    elif backend == "postgres":
        with fresh_pg_url() as url:
            yield url
    else:
        raise ValueError(f"no contract database for backend {backend!r}")


@pytest.fixture
async def store(database_url: str) -> AsyncIterator[Store]:
    opened = open_store(database_url, clock=lambda: NOW)
    await opened.open()
    try:
        yield opened
    finally:
        await opened.close()


@pytest.fixture
async def closed_store(database_url: str) -> Store:
    """A store that was opened and closed again: every call must fail with StoreError."""
    closed = open_store(database_url, clock=lambda: NOW)
    await closed.open()
    await closed.close()
    return closed


def event(event_id: str, recipient: str = "r1", at: str = "2024-05-01T09:00:00Z", **payload: object) -> Event:
    item = {"id": event_id, "type": "profile.updated", "recipient": recipient, "occurred_at": at}
    return parse_event({**item, "payload": payload or {"n": event_id}}, now=NOW)
