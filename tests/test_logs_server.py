"""Logs of a real ``opentime serve``: the lines an operator reads, as uvicorn writes them.

What is checked is the server's whole output (stdout and stderr): every line parses as JSON with the
fields and request ids, an authentication failure writes one audit line, a burst of fallbacks one
line, and nothing in it (access log included) holds a token, a recipient id or an address.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import re
import time
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from app.config import Settings
from app.demo import recipient_id
from app.security.apikeys import create_key, revoke_key
from app.security.tokens import TokenSigner
from app.store import open_store
from tests.conftest import SENDER
from tests.servers import free_port, running, server_config

pytestmark = pytest.mark.server
SECRET = "whsec-logs-test-0123456789"
WRONG_SECRET = "W" * 43  # a well-formed key secret that is nobody's
# A recipient id as an address, in the spellings the adversarial pass used.
ADDRESSES = ["ann@example.com", "ann\uff20example.com", "ann%40example.com", "ann%2540example.com"]


def make_keys(database_url: str) -> dict[str, str]:
    """Plaintext API keys by name: ``render`` and ``admin`` valid, ``revoked`` revoked."""

    async def make() -> dict[str, str]:
        store = open_store(database_url)
        await store.open()
        try:
            keys = {}
            for name, scopes in (("render", ["render"]), ("admin", ["admin"]), ("revoked", ["render"])):
                record, keys[name] = await create_key(store.api_keys, name, scopes, time.time())
            await revoke_key(store.api_keys, record.key_id, time.time())
            return keys
        finally:
            await store.close()

    return asyncio.run(make())


def key_id(key: str) -> str:
    return key.split("_")[1]


def signed(body: bytes, secret: str, timestamp: int) -> str:
    digest = hmac.new(secret.encode(), str(timestamp).encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


def json_lines(log: Path) -> list[dict[str, Any]]:
    lines = [line for line in log.read_text().splitlines() if line.strip()]
    parsed = [orjson.loads(line) for line in lines]  # every line: a non-JSON line fails here
    for line in parsed:
        assert {"ts", "level", "logger", "message", "request_id"} <= set(line), line
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", line["ts"])
    return parsed


def audit_lines(lines: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [line for line in lines if line["logger"] == "opentime.audit"]


def test_json_lines_audit_fallbacks_and_request_ids(
    settings: Settings, tmp_path: Path, signer: TokenSigner
) -> None:
    keys = make_keys(settings.database_url)
    port = free_port()
    config = server_config(
        settings, port, tmp_path / "opentime.toml", log_format="json", webhook_secrets=(SECRET,)
    )
    base = f"http://127.0.0.1:{port}"
    token = signer.sign("demo", recipient_id(1), now=int(time.time()))
    tampered = token[:-3] + ("BBB" if token.endswith("AAA") else "AAA")
    amp = {"AMP-Email-Sender": SENDER}
    render = {"campaign": "demo", "recipients": [recipient_id(1)]}
    # (request id, reason, route template, key id): one audit line each
    failures = [
        ("t-missing", "missing-key", "/api/render", None),
        ("t-malformed", "malformed-key", "/api/render", None),
        ("t-unknown", "unknown-key", "/api/render", "deadbeef"),
        ("t-secret", "bad-secret", "/api/render", key_id(keys["render"])),
        ("t-revoked", "revoked-key", "/api/render", key_id(keys["revoked"])),
        ("t-scope", "missing-scope", "/api/customers/{customer}/personalization", key_id(keys["render"])),
        ("t-preview", "missing-key", "/preview/{campaign}", None),
    ]
    with (
        running(["serve", "--config", str(config)], port, tmp_path / "server.log"),
        httpx.Client(base_url=base) as http,
    ):
        first = http.get(f"/v1/{tampered}/list/picks.json", headers=amp)
        for _ in range(19):
            assert http.get(f"/v1/{tampered}/list/picks.json", headers=amp).status_code == 200
        quiet = http.get(f"/v1/{token}/list/picks.json", headers={**amp, "X-Request-Id": "cdn-quiet"})
        bearer = {"Authorization": f"Bearer {keys['render']}"}
        assert http.post("/api/render", json=render, headers=bearer).status_code == 200
        answers = {
            "t-missing": http.post("/api/render", json=render, headers={"X-Request-Id": "t-missing"}),
            "t-malformed": http.post(
                "/api/render",
                json=render,
                headers={"X-Request-Id": "t-malformed", "X-API-Key": "otk_nope"},
            ),
            "t-unknown": http.post(
                "/api/render",
                json=render,
                headers={"X-Request-Id": "t-unknown", "X-API-Key": f"otk_deadbeef_{WRONG_SECRET}"},
            ),
            "t-secret": http.post(
                "/api/render",
                json=render,
                headers={
                    "X-Request-Id": "t-secret",
                    "X-API-Key": f"otk_{key_id(keys['render'])}_{WRONG_SECRET}",
                },
            ),
            "t-revoked": http.post(
                "/api/render",
                json=render,
                headers={"X-Request-Id": "t-revoked", "X-API-Key": keys["revoked"]},
            ),
            "t-scope": http.get(
                f"/api/customers/{recipient_id(1)}/personalization",
                headers={"X-Request-Id": "t-scope", **bearer},
            ),
            "t-preview": http.get(
                f"/preview/demo?recipient={recipient_id(1)}", headers={"X-Request-Id": "t-preview"}
            ),
        }
        body = b'{"events": []}'
        stale = int(time.time()) - 3600
        hooks = {
            "t-signature": signed(body, "whsec-not-ours-0123456789", int(time.time())),
            "t-stale": signed(body, SECRET, stale),
        }
        for rid, header in hooks.items():
            answers[rid] = http.post(
                "/webhooks/events",
                content=body,
                headers={
                    "Content-Type": "application/json",
                    "Opentime-Signature": header,
                    "X-Request-Id": rid,
                },
            )
    lines = json_lines(tmp_path / "server.log")

    assert [a.status_code for a in answers.values()] == [401, 401, 401, 401, 401, 403, 401, 401, 401]
    assert all(answers[rid].headers["x-request-id"] == rid for rid in answers)
    audits = {line["request_id"]: line for line in audit_lines(lines)}
    assert len(audit_lines(lines)) == len(answers), "one audit line per failure, no more"
    for rid, reason, route, kid in failures:
        line = audits[rid]
        assert (line["reason"], line["route"], line["client"], line.get("key_id")) == (
            reason,
            route,
            "127.0.0.1",
            kid,
        )
        assert line["level"] == "WARNING" and line["audit"] == "auth-failed"
    assert audits["t-signature"]["reason"] == "bad-signature"
    assert audits["t-stale"]["reason"] == "timestamp-outside-tolerance"
    assert audits["t-signature"]["route"] == "/webhooks/events"
    text = (tmp_path / "server.log").read_text()
    assert WRONG_SECRET not in text and keys["revoked"].split("_", 2)[2] not in text

    # 20 tampered opens of one block: one line, whose request id the first answer carries.
    fallbacks = [line for line in lines if line["message"].startswith("open-time fallback")]
    assert len(fallbacks) == 1
    assert {k: fallbacks[0][k] for k in ("reason", "kind", "campaign", "block", "level")} == {
        "reason": "token-bad-signature",
        "kind": "list",
        "campaign": "demo",
        "block": "picks",
        "level": "INFO",
    }
    assert first.headers["x-request-id"] == fallbacks[0]["request_id"]
    assert "x-request-id" not in quiet.headers  # nothing was logged for it: no id was made
    assert tampered not in text and token not in text and recipient_id(1) not in text
    # uvicorn's own lines are JSON too (every line parsed above), at the configured level
    assert any(line["logger"] == "uvicorn.error" and "Uvicorn running" in line["message"] for line in lines)


def test_the_access_log_keeps_no_token_id_or_address(
    settings: Settings, tmp_path: Path, signer: TokenSigner
) -> None:
    keys = make_keys(settings.database_url)
    port = free_port()
    config = server_config(settings, port, tmp_path / "opentime.toml", log_format="json", access_log=True)
    admin = {"Authorization": f"Bearer {keys['admin']}"}
    token = signer.sign("demo", recipient_id(1), now=int(time.time()))
    sealed = signer.sign("demo", "ann\uff20example.com", now=int(time.time()))
    log = tmp_path / "server.log"
    with (
        running(["serve", "--config", str(config)], port, log),
        httpx.Client(base_url=f"http://127.0.0.1:{port}") as http,
    ):
        for opened in (token, sealed):
            assert (
                http.get(f"/v1/{opened}/list/picks.json", headers={"AMP-Email-Sender": SENDER}).status_code
                == 200
            )
        assert http.get(f"/api/customers/{recipient_id(2)}/personalization", headers=admin).status_code == 200
        for address in ADDRESSES:
            answer = http.get(f"/api/customers/{address}/personalization", headers=admin)
            assert answer.status_code == 404
            assert http.get(f"/nowhere/{address}").status_code == 404
        preview = http.get(f"/preview/demo?recipient={recipient_id(3)}", auth=("me", keys["admin"]))
        assert preview.status_code == 200
    lines = json_lines(tmp_path / "server.log")
    # (without the start-up wait's /readyz polls)
    access = [line for line in lines if line["logger"] == "uvicorn.access" and line["path"] != "/readyz"]
    assert len(access) == 2 + 1 + 2 * len(ADDRESSES) + 1
    paths = [line["path"] for line in access]
    assert paths[:3] == [
        "/v1/…/list/picks.json",
        "/v1/…/list/picks.json",
        "/api/customers/{id}/personalization",
    ]
    assert paths[-1] == "/preview/demo?recipient=…"
    assert "/nowhere/…" in paths
    assert all(line["request_id"] for line in access)
    text = (tmp_path / "server.log").read_text()
    for secret in (token, sealed, recipient_id(1), recipient_id(2), recipient_id(3), "example.com", "ann"):
        assert secret not in text, secret


def test_text_lines_are_readable(settings: Settings, tmp_path: Path) -> None:
    port = free_port()
    config = server_config(settings, port, tmp_path / "opentime.toml", access_log=True)
    with running(["serve", "--config", str(config)], port, tmp_path / "server.log"):
        answer = httpx.post(
            f"http://127.0.0.1:{port}/api/render",
            json={},
            headers={"X-API-Key": f"otk_0badc0de_{WRONG_SECRET}"},
        )
        assert answer.status_code == 401
    text = (tmp_path / "server.log").read_text()
    rid = answer.headers["x-request-id"]
    stamp = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z"
    audit = (
        rf"{stamp} WARNING opentime\.audit \[{rid}\] authentication failed on /api/render from 127\.0\.0\.1:"
        r" unknown-key audit=auth-failed reason=unknown-key route=/api/render client=127\.0\.0\.1"
        r" key_id=0badc0de"
    )
    assert re.search(audit, text), text
    assert re.search(
        rf'{stamp} INFO uvicorn\.access \[{rid}\] 127\.0\.0\.1:\d+ - "POST /api/render HTTP/1\.1" 401', text
    )
    assert re.search(rf"{stamp} INFO uvicorn\.error Uvicorn running on http://127\.0\.0\.1:{port}", text)
    assert not [line for line in text.splitlines() if line.startswith("{")]


def test_every_worker_of_the_demo_logs_json(tmp_path: Path, shared_redis: tuple[str, str]) -> None:
    port = free_port()
    env = {
        "OPENTIME_LOG_FORMAT": "json",
        "OPENTIME_REDIS_URL": shared_redis[0],
        "OPENTIME_REDIS_KEY_PREFIX": shared_redis[1],
    }
    args = ["serve", "--demo", "--workers", "2", "--port", str(port)]
    with running(args, port, tmp_path / "server.log", env=env):
        for _ in range(4):  # new connections: the workers share the listening socket
            assert httpx.post(f"http://127.0.0.1:{port}/api/render", json={}).status_code == 401
    text = (tmp_path / "server.log").read_text()
    # The demo's banner (stdout) is text for a person; every log line is JSON.
    lines = [orjson.loads(line) for line in text.splitlines() if line.startswith("{")]
    started = {line["message"] for line in lines if line["message"].startswith("Started server process")}
    assert len(started) == 2, started
    assert sum(line["message"] == "Application startup complete." for line in lines) == 2
    assert len(audit_lines(lines)) == 4
    assert not [line for line in text.splitlines() if line.startswith(("INFO:", "WARNING:", "ERROR:"))]
