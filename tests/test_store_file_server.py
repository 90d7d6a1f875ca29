"""The store's file under a running ``opentime serve``: deleted, replaced or corrupt, and start-up on
a missing or empty store (issue 13, finding 2).

Attack/incident: with the SQLite file deleted under a running server, a signed event was acknowledged
(written into an inode nobody opens again), and on restart the server created an empty database and
said ready; with the file corrupted, ``/readyz`` stayed green.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import httpx
import orjson
import pytest
from click.testing import CliRunner

from app.cli.main import main as cli
from app.config import Settings
from app.demo import recipient_id
from app.security.webhook_auth import sign_header
from app.store import open_store
from app.store.base import StoreError
from tests.servers import OPENTIME, clean_env, free_port, running, server_config

pytestmark = pytest.mark.server
SECRET = "whsec-store-file-0123456789"


def db_path(settings: Settings) -> Path:
    return Path(settings.database_url.removeprefix("sqlite:///"))


def post_event(base: str, event_id: str) -> httpx.Response:
    body = orjson.dumps(
        {
            "id": event_id,
            "type": "profile.updated",
            "recipient": recipient_id(1),
            "occurred_at": "2024-05-01T10:00:00Z",
            "payload": {"first_name": "Zoe"},
        }
    )
    headers = {
        "content-type": "application/json",
        "opentime-signature": sign_header([SECRET], int(time.time()), body),
    }
    return httpx.post(f"{base}/webhooks/events", content=body, headers=headers, timeout=10)


def delete(path: Path) -> None:
    path.unlink()


def replace_file(path: Path) -> None:
    # A restore or a bad deploy: a copy of the same data put in place (a new inode at the path).
    copy = path.with_suffix(".copy")
    shutil.copyfile(path, copy)
    os.replace(copy, path)


def corrupt(path: Path) -> None:
    with path.open("r+b") as file:  # in place: same inode, same size
        file.write(b"\x00garbage\xff" * 50)


@pytest.fixture
def config(settings: Settings, tmp_path: Path) -> Iterator[tuple[Path, int]]:
    port = free_port()
    yield server_config(settings, port, tmp_path / "opentime.toml", webhook_secrets=(SECRET,)), port


@pytest.mark.parametrize(
    ("damage", "reason"), [(delete, "deleted"), (replace_file, "replaced"), (corrupt, "corrupt")]
)
def test_a_damaged_store_file_is_noticed_refused_and_alerted(
    settings: Settings,
    tmp_path: Path,
    config: tuple[Path, int],
    damage: Callable[[Path], None],
    reason: str,
) -> None:
    path, port = config
    base = f"http://127.0.0.1:{port}"
    log = tmp_path / "server.log"
    with running(["serve", "--config", str(path)], port, log):
        assert post_event(base, "before").status_code == 200
        damage(db_path(settings))
        response = post_event(base, "after")
        assert response.status_code == 503, response.text  # nothing acknowledged
        ready = httpx.get(f"{base}/readyz", timeout=5)
        assert (ready.status_code, ready.json()["reason"]) == (503, f"store-{reason}")
        metrics = httpx.get(f"{base}/metrics", timeout=5).text
        assert f'opentime_store_problem{{reason="{reason}"}} 1.0' in metrics
        assert post_event(base, "later").status_code == 503  # sticky, until a restart
    assert f"ALERT sqlite {db_path(settings)}" in log.read_text()


def serve_once(config: Path, *extra_env: tuple[str, str]) -> subprocess.CompletedProcess[str]:
    """``opentime serve`` expected to refuse: it must exit by itself, quickly."""
    env = {**clean_env(), **dict(extra_env)}
    return subprocess.run(
        [*OPENTIME, "serve", "--config", str(config)], env=env, capture_output=True, text=True, timeout=60
    )


def test_a_deleted_store_is_not_recreated_empty_on_restart(
    settings: Settings, config: tuple[Path, int]
) -> None:
    path, _ = config
    db_path(settings).unlink()
    result = serve_once(path)
    assert result.returncode == 2, result.stderr
    assert f"{db_path(settings)}: the database file does not exist" in result.stderr
    assert "opentime db init" in result.stderr and "create_database = true" in result.stderr
    assert not db_path(settings).exists()


def test_db_init_creates_the_store_and_serve_then_starts(
    settings: Settings, tmp_path: Path, config: tuple[Path, int]
) -> None:
    path, port = config
    db_path(settings).unlink()
    first = CliRunner().invoke(cli, ["db", "init", "--config", str(path)])
    assert first.exit_code == 0 and "new store created at schema version" in first.output
    again = CliRunner().invoke(cli, ["db", "init", "--config", str(path)])
    assert again.exit_code == 0 and "left as it is" in again.output
    with running(["serve", "--config", str(path)], port, tmp_path / "server.log"):
        assert httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=5).status_code == 200


def test_create_database_lets_the_server_create_an_empty_store(settings: Settings, tmp_path: Path) -> None:
    port = free_port()
    fresh = replace(settings, database_url=f"sqlite:///{tmp_path / 'new.db'}")
    path = server_config(fresh, port, tmp_path / "create.toml", create_database=True)
    with running(["serve", "--config", str(path)], port, tmp_path / "server.log"):
        assert httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=5).status_code == 200
    assert (tmp_path / "new.db").exists()


def test_an_empty_postgresql_schema_is_refused_unless_created(pg_url: str) -> None:
    async def open_and_close(create: bool) -> None:
        store = open_store(pg_url, create=create)
        await store.open()
        await store.close()

    for _ in range(2):  # still refused the second time: nothing was created on the way
        with pytest.raises(StoreError, match=r"holds no Opentime store .*opentime db init"):
            asyncio.run(open_and_close(create=False))
    result = CliRunner().invoke(cli, ["db", "init", "--database-url", pg_url])
    assert result.exit_code == 0 and "new store created" in result.output
    asyncio.run(open_and_close(create=False))
