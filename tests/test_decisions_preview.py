"""The preview says which variant a recipient gets at a chosen time and client, and why."""

from __future__ import annotations

import asyncio
import base64
import time

from click.testing import CliRunner
from starlette.testclient import TestClient

from app.app import create_app
from app.cli.preview import preview
from app.config import Settings
from app.demo import recipient_id
from app.security.apikeys import create_key
from app.store import open_store
from tests.conftest import BASE_URL

EVENING = "2030-01-02T23:30:00Z"  # 18:30 in New York, the flash sale's zone (the demo has no zone)
AFTERNOON = "2030-01-02T15:00:00Z"


def run(settings: Settings, *args: str) -> tuple[int, str]:
    env = {
        "OPENTIME_PUBLIC_BASE_URL": settings.public_base_url,
        "OPENTIME_KEYS_FILE": str(settings.keys_file),
        "OPENTIME_ALLOWED_SENDERS": ",".join(settings.allowed_senders),
        "OPENTIME_DATABASE_URL": settings.database_url,
        "OPENTIME_TEMPLATES_DIR": str(settings.templates_dir),
        "OPENTIME_STATIC_DIR": str(settings.static_dir),
    }
    result = CliRunner().invoke(preview, ["--campaign", "flash-sale", *args], env=env)
    return result.exit_code, result.stdout


def test_the_cli_names_the_variant_and_the_rule_that_chose_it(settings: Settings) -> None:
    rid = recipient_id(2)
    code, out = run(settings, "--recipient", rid, "--at", EVENING, "--client", "gmail")
    lines = out.splitlines()
    assert code == 0, out
    assert "opened by  gmail" in lines
    assert "  deals: last-call, because after = '18:00', variant = 'last-call'" in lines
    banner = next(line for line in lines if line.startswith("  banner: "))
    assert any(f"banner: {v} (experiment headline)" in banner for v in ("urgent", "calm", "holdout"))
    assert "  deals: live, 2 item(s)" in lines  # the last call shows two
    code, out = run(settings, "--recipient", rid, "--at", AFTERNOON)
    assert "  deals: default, because no rule matched" in out.splitlines()
    assert "  deals: live, 4 item(s)" in out.splitlines()
    assert banner in out.splitlines()  # the same recipient, the same headline at any time


def test_the_preview_page_shows_the_decisions(settings: Settings) -> None:
    async def key() -> str:
        store = open_store(settings.database_url)
        await store.open()
        try:
            return (await create_key(store.api_keys, "p", ["preview"], time.time()))[1]
        finally:
            await store.close()

    auth = {"Authorization": "Basic " + base64.b64encode(f"m:{asyncio.run(key())}".encode()).decode()}
    with TestClient(create_app(settings), base_url=BASE_URL) as client:
        url = f"/preview/flash-sale?recipient={recipient_id(2)}&at={EVENING}&client=apple"
        page = client.get(url, headers=auth)
        assert page.status_code == 200
        assert 'id="decisions"' in page.text and "<code>apple</code>" in page.text
        assert "<code>deals</code>: <strong>last-call</strong>" in page.text
        bad = client.get(f"/preview/flash-sale?recipient={recipient_id(2)}&client=fax", headers=auth)
        assert bad.status_code == 400 and "client must be one of" in bad.json()["error"]
