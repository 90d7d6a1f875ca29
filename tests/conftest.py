"""Shared fixtures: explicit settings on real files, never the machine's environment."""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from app.app import create_app
from app.config import PROJECT_ROOT, Settings
from app.demo import demo_rows
from app.security.keyring import KeyRing, new_keyring, save_keyring
from app.security.tokens import TokenSigner
from app.store import open_store
from app.store.base import RecipientData
from tests.amp_tools import amp_validator, mustache  # noqa: F401  (session fixtures)
from tests.node_tools import node_tools  # noqa: F401  (session fixture)
from tests.pg import pg_url  # noqa: F401  (a fresh PostgreSQL schema's URL per test)
from tests.redis_tools import private_redis, shared_redis  # noqa: F401  (fixtures)

SENDER = "news@example.com"
BASE_URL = "https://amp.example.test"
DEMO_COUNT = 20


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--update-golden", action="store_true", help="rewrite tests/golden/ from the templates")


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("OPENTIME_"):
            monkeypatch.delenv(name)


@pytest.fixture
def ring() -> KeyRing:
    return new_keyring(datetime.now(UTC))


@pytest.fixture
def keys_file(tmp_path: Path, ring: KeyRing) -> Path:
    path = tmp_path / "keys.json"
    save_keyring(ring, path, overwrite=False)
    return path


@pytest.fixture
def signer(ring: KeyRing) -> TokenSigner:
    return TokenSigner(ring)


def load_rows(database_url: str, rows: list[tuple[str, bytes]]) -> None:
    async def load() -> None:
        store = open_store(database_url)
        await store.open()
        try:
            await store.profiles.upsert_many(rows)
        finally:
            await store.close()

    asyncio.run(load())


def stored_data(database_url: str, recipient: str) -> RecipientData:
    """Everything the store at ``database_url`` holds about ``recipient`` (its access-request export)."""

    async def read() -> RecipientData:
        store = open_store(database_url)
        await store.open()
        try:
            return await store.privacy.export(recipient)
        finally:
            await store.close()

    return asyncio.run(read())


@pytest.fixture
def settings(tmp_path: Path, keys_file: Path) -> Settings:
    database_url = f"sqlite:///{tmp_path / 'profiles.db'}"
    load_rows(database_url, list(demo_rows(DEMO_COUNT)))
    return Settings(
        public_base_url=BASE_URL,
        keys_file=keys_file,
        allowed_senders=(SENDER,),
        database_url=database_url,
        templates_dir=PROJECT_ROOT / "amp_templates",
        static_dir=PROJECT_ROOT / "static",
    )


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings), base_url=BASE_URL, follow_redirects=False) as test_client:
        yield test_client


def insecure_demo(settings: Settings, root: Path) -> Settings:
    """The shipped campaigns, with an authoring mistake in the demo's AMP part: a hard-coded http
    image, which the AMP validator fails whatever base URL the email's own URLs are given."""
    templates = root / "amp_templates"
    shutil.copytree(settings.templates_dir, templates)
    amp = templates / "demo" / "email.amp.html"
    image = '<amp-img src="http://cdn.example.com/x.png" width="10" height="10" alt=""></amp-img>'
    amp.write_text(amp.read_text().replace("<body>", f"<body>\n{image}", 1))
    return settings.replace(templates_dir=templates)
