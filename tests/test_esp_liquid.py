"""The README's ESP snippet, rendered by LiquidJS, gives URLs a real server answers with personal data.

LiquidJS (npm ``liquidjs``) ships ``hmac_sha256`` as one of its own filters, as Shopify's Liquid does,
and runs strict here: a filter the engine lacks is an error, not an empty string. The snippet is taken
from README.md as written (only its placeholders are filled in), the ESP key is the one
``opentime keys esp-key`` hands out, and the URL is fetched from ``opentime serve`` on 127.0.0.1.
"""

from __future__ import annotations

import re
import sqlite3
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import orjson
import pytest

from app.config import PROJECT_ROOT, Settings
from app.demo import recipient_id
from tests.conftest import SENDER
from tests.node_tools import NodeTools
from tests.servers import OPENTIME, clean_env, free_port, running

pytestmark = pytest.mark.server

README_BASE = "https://amp.example.com"


@dataclass(frozen=True, slots=True)
class EspSetup:
    base_url: str
    esp_key: str
    kid: str


def readme_liquid_example() -> str:
    readme = (PROJECT_ROOT / "README.md").read_text()
    match = re.search(r"<!-- esp-liquid-example -->\n```liquid\n(.*?)```", readme, re.S)
    assert match, "the README lost its ESP Liquid example"
    return match.group(1)


def esp_key(settings: Settings) -> tuple[str, str]:
    """(key, kid) as ``opentime keys esp-key`` prints them (key on stdout, kid on stderr)."""
    done = subprocess.run(
        [*OPENTIME, "keys", "esp-key", "--keys", str(settings.keys_file), "--campaign", "demo"],
        capture_output=True,
        text=True,
        env=clean_env(),
        timeout=60,
        check=True,
    )
    return done.stdout.strip(), done.stderr.strip().removeprefix("kid: ")


@pytest.fixture
def server(settings: Settings, tmp_path: Path) -> Iterator[EspSetup]:
    port = free_port()
    config = tmp_path / "opentime.toml"
    config.write_text(
        f'public_base_url = "http://127.0.0.1:{port}"\n'
        f'keys_file = "{settings.keys_file}"\n'
        f'database_url = "{settings.database_url}"\n'
        f'allowed_senders = ["{SENDER}"]\n'
        f"port = {port}\n"
    )
    key, kid = esp_key(settings)
    with running(["serve", "--config", str(config)], port, tmp_path / "server.log"):
        yield EspSetup(f"http://127.0.0.1:{port}", key, kid)


def esp_url(node_tools: NodeTools, setup: EspSetup, customer_id: str) -> str:
    """The amp-list URL the ESP computes for ``customer_id`` from the README snippet."""
    source = readme_liquid_example().replace("ESP_CAMPAIGN_KEY", setup.esp_key).replace("KID", setup.kid)
    html = node_tools.render_liquid(source, {"customer": {"id": customer_id}})
    src = re.search(r'src="([^"]+)"', html)
    assert src, html
    assert src.group(1).startswith(f"{README_BASE}/v1/e1.demo.{setup.kid}.{customer_id}.")
    return setup.base_url + src.group(1).removeprefix(README_BASE)


def stored_pick_names(settings: Settings, customer_id: str) -> list[str]:
    path = settings.database_url.removeprefix("sqlite:///")
    query = "SELECT attributes FROM profiles WHERE recipient_id = ?"
    with sqlite3.connect(path) as conn:
        row = conn.execute(query, (customer_id,)).fetchone()
    conn.close()
    return [item["name"] for item in orjson.loads(row[0])["recommendations"]]


def test_liquidjs_hmac_sha256_is_shopifys(node_tools: NodeTools) -> None:
    # Shopify's documented example for hmac_sha256; the ESP token relies on these semantics.
    rendered = node_tools.render_liquid("{{ 'Polyjuice' | hmac_sha256: 'Polina' }}", {})
    assert rendered == "8e0d5d65cff1242a4af66c8f4a32854fd5fb80edcc8aabe9b302b29c7c71dc20"


def test_esp_computed_url_serves_the_recipients_own_items(
    server: EspSetup, settings: Settings, node_tools: NodeTools
) -> None:
    customer = recipient_id(1)
    response = httpx.get(esp_url(node_tools, server, customer), headers={"AMP-Email-Sender": SENDER})
    assert response.status_code == 200
    assert "x-opentime-fallback" not in response.headers
    assert response.headers["amp-email-allow-sender"] == SENDER
    names = [item["name"] for item in response.json()["items"]]
    assert names == stored_pick_names(settings, customer)  # this customer's picks, not the fallback's
    assert names != stored_pick_names(settings, recipient_id(2))


def test_copied_esp_mac_for_another_recipient_is_refused(server: EspSetup, node_tools: NodeTools) -> None:
    # Attack: reuse one recipient's MAC with another id to read their data.
    mac_of = re.compile(r"\.([0-9a-f]{32})/")
    stolen = mac_of.search(esp_url(node_tools, server, recipient_id(1)))
    assert stolen
    forged = mac_of.sub(f".{stolen.group(1)}/", esp_url(node_tools, server, recipient_id(2)))
    response = httpx.get(forged, headers={"AMP-Email-Sender": SENDER})
    assert response.headers["x-opentime-fallback"] == "token-bad-signature"
    assert response.json()["items"][0]["name"] == "Bestsellers of the week"  # static, public
