"""``opentime erase``, ``opentime erasures`` and ``opentime retention run`` through click's CliRunner,
on real SQLite files (and the machine's Redis for the announcement to a running node)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import orjson
from click.testing import CliRunner
from starlette.testclient import TestClient

from app.app import create_app
from app.cli.main import main
from app.config import Settings
from app.demo import recipient_id
from app.ingest.events import parse_event
from app.security.tokens import TokenSigner
from app.store import open_store
from app.store.base import Submission
from tests.conftest import BASE_URL, SENDER, stored_data

DAY = 86400.0


def run(*args: str, env: dict[str, str] | None = None, stdin: str | None = None) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, list(args), env=env, input=stdin, catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


def store_events(url: str, now: float, *ids: str, recipient: str = "r1") -> None:
    """Events applied as if received at ``now``, and a form answer of the same age."""

    async def commit() -> None:
        store = open_store(url)
        await store.open()
        try:
            items = [
                {
                    "id": i,
                    "type": "profile.updated",
                    "recipient": recipient,
                    "occurred_at": "2024-05-01T09:00:00Z",
                }
                for i in ids
            ]
            await store.events.commit(
                [parse_event({**item, "payload": {"n": 1}}, now=now) for item in items], now
            )
            payload = orjson.dumps({"rating": str(now)})
            await store.forms.save(Submission(f"sub-{ids[0]}", "demo", "rate", recipient, payload), now)
        finally:
            await store.close()

    asyncio.run(commit())


def test_erase_ids_from_arguments_and_a_file_then_check_them(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'p.db'}"
    for recipient in ("r1", "r2", "r3"):
        store_events(url, time.time(), f"{recipient}-e", recipient=recipient)
    ids = tmp_path / "ids.txt"
    ids.write_text("r2\n\nr3\nnever-seen\n")
    code, out, err = run("erase", "r1", "--file", str(ids), "--database-url", url)
    assert code == 0, err
    assert "erased 4 recipient(s): 3 profile(s), 3 event id(s), 3 form answer(s) removed" in out
    assert "r1" not in err and "r2" not in err  # stderr names the store and shows progress only
    assert all(stored_data(url, r).profile is None for r in ("r1", "r2", "r3"))

    code, out, _ = run("erasures", "r1", "never-seen", "--database-url", url)
    assert code == 0
    lines = out.splitlines()
    assert lines[0].startswith("r1: erased 20") and "by cli" in lines[0]
    assert "1 profile(s), 1 event id(s), 1 form answer(s) removed" in lines[0]
    assert lines[1].startswith("never-seen: erased") and "0 profile(s)" in lines[1]
    code, out, _ = run("erasures", "somebody-else", "--database-url", url)
    assert (code, out) == (1, "somebody-else: no erasure recorded\n")

    # One id: the record's id is printed, for the requester's files.
    code, out, _ = run("erase", "r1", "--database-url", url)
    assert code == 0 and out.startswith("erased: record ") and "0 profile(s)" in out


def test_erase_reads_standard_input_and_refuses_bad_ids_by_position(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'p.db'}"
    store_events(url, time.time(), "e1")
    code, _, err = run("erase", "--file", "-", "--database-url", url, stdin="r9\n" + "x" * 201 + "\n")
    assert code == 2 and "line 2: a recipient id is 1-200 characters" in err
    assert "x" * 201 not in err
    assert stored_data(url, "r1").profile is not None  # nothing erased when any id is bad
    code, _, err = run("erase", "--database-url", url)
    assert code == 2 and "give recipient ids" in err
    code, out, _ = run("erase", "--file", "-", "--database-url", url, stdin="r1\n")
    assert code == 0 and "1 profile(s)" in out


def test_erase_never_creates_a_store(tmp_path: Path) -> None:
    missing = tmp_path / "typo.db"
    code, _, err = run("erase", "r1", "--database-url", f"sqlite:///{missing}")
    assert code == 2 and "does not exist" in err
    assert not missing.exists()


def test_retention_run_deletes_old_rows_and_keeps_new_ones(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'p.db'}"
    now = time.time()
    store_events(url, now - 40 * DAY, "old-1", "old-2")
    store_events(url, now - 10 * DAY, "new-1")
    code, out, _ = run("retention", "run", "--database-url", url, env={"OPENTIME_RETENTION_DAYS": "0"})
    assert code == 0 and "kept forever" in out
    code, out, err = run("retention", "run", "--database-url", url, "--days", "30")
    assert code == 0, err
    assert out == (
        "deleted 2 event id(s), 1 form answer(s) and 0 exposure counter(s) stored more than 30 day(s) ago\n"
    )
    kept = stored_data(url, "r1")
    assert [e.id for e in kept.events] == ["new-1"] and [a.submission_id for a in kept.form_answers] == [
        "sub-new-1"
    ]
    code, out, _ = run("retention", "run", "--database-url", url, env={"OPENTIME_RETENTION_DAYS": "5"})
    assert code == 0 and out.startswith("deleted 1 event id(s), 1 form answer(s)")


def test_erase_with_redis_makes_a_running_node_drop_its_cached_answer(
    settings: Settings, signer: TokenSigner, shared_redis: tuple[str, str], tmp_path: Path
) -> None:
    redis_url, prefix = shared_redis
    node = settings.replace(redis_url=redis_url, redis_key_prefix=prefix)
    who = recipient_id(4)
    token = signer.sign("demo", who, now=int(time.time()))
    with TestClient(create_app(node), base_url=BASE_URL) as client:

        def fallback() -> str | None:
            response = client.get(f"/v1/{token}/list/picks.json", headers={"AMP-Email-Sender": SENDER})
            assert response.status_code == 200
            return response.headers.get("x-opentime-fallback")

        deadline = time.monotonic() + 10
        while client.get("/readyz").json().get("redis") != "up" and time.monotonic() < deadline:
            time.sleep(0.05)
        assert fallback() is None  # personal, and cached in the node
        env = {"OPENTIME_REDIS_URL": redis_url, "OPENTIME_REDIS_KEY_PREFIX": prefix}
        code, _, err = run("erase", who, "--database-url", settings.database_url, env=env)
        assert code == 0, err
        assert "no redis_url" not in err
        deadline = time.monotonic() + 1.0
        while fallback() is None:
            assert time.monotonic() < deadline, "the node kept serving the erased recipient's list"
            time.sleep(0.01)
        assert fallback() == "unknown-recipient"


def test_erase_without_redis_says_how_long_servers_may_keep_cached_answers(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'p.db'}"
    store_events(url, time.time(), "e1")
    code, _, err = run("erase", "r1", "--database-url", url)
    assert code == 0 and "up to 300s" in err
