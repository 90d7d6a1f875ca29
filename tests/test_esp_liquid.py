"""The README's ESP example, rendered by a real Liquid engine, yields URLs the server accepts."""

from __future__ import annotations

import hashlib
import hmac
import re

from liquid import Environment
from starlette.testclient import TestClient

from app.config import PROJECT_ROOT
from app.demo import recipient_id
from app.security.keyring import KeyRing
from app.security.tokens import esp_campaign_key
from tests.conftest import SENDER


def readme_liquid_example() -> str:
    readme = (PROJECT_ROOT / "README.md").read_text()
    match = re.search(r"<!-- esp-liquid-example -->\n```liquid\n(.*?)```", readme, re.S)
    assert match, "the README lost its ESP Liquid example"
    return match.group(1)


def liquid() -> Environment:
    env = Environment()
    # Shopify/Braze semantics: {{ message | hmac_sha256: key }} -> lowercase hex digest, key taken as text.
    env.filters["hmac_sha256"] = lambda message, key: hmac.new(
        str(key).encode(), str(message).encode(), hashlib.sha256
    ).hexdigest()
    return env


def render_src(ring: KeyRing, customer_id: str) -> str:
    key = ring.signing_key
    source = readme_liquid_example().replace("ESP_CAMPAIGN_KEY", esp_campaign_key(key, "demo"))
    source = source.replace("KID", key.kid)
    html = liquid().from_string(source).render(customer={"id": customer_id})
    src = re.search(r'src="([^"]+)"', html)
    assert src
    return src.group(1).replace("https://amp.example.com", "")


def test_esp_computed_url_serves_the_recipients_items(client: TestClient, ring: KeyRing) -> None:
    path = render_src(ring, recipient_id(1))
    assert path.startswith("/v1/e1.demo.")
    response = client.get(path, headers={"AMP-Email-Sender": SENDER})
    assert response.status_code == 200
    assert "x-opentime-fallback" not in response.headers
    assert len(response.json()["items"]) == 4


def test_copied_esp_mac_for_another_recipient_is_refused(client: TestClient, ring: KeyRing) -> None:
    # Attack: reuse one recipient's MAC with another id to read their data.
    mac_of = re.compile(r"\.([0-9a-f]{32})/")
    stolen = mac_of.search(render_src(ring, recipient_id(1)))
    assert stolen
    forged_path = mac_of.sub(f".{stolen.group(1)}/", render_src(ring, recipient_id(2)))
    response = client.get(forged_path, headers={"AMP-Email-Sender": SENDER})
    assert response.headers["x-opentime-fallback"] == "token-bad-signature"
    assert response.json()["items"][0]["name"] == "Bestsellers of the week"  # static, public
