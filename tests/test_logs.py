"""Log lines as the formatters write them, request ids through the app, and throttled fallback lines.

The configuration as uvicorn applies it (every worker, uvicorn's own loggers, the access log) is
tested against real servers in ``tests/test_logs_server.py``; here each part is checked alone.
"""

from __future__ import annotations

import contextvars
import logging
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from types import SimpleNamespace

import orjson
import pytest
from starlette.testclient import TestClient

from app.campaigns.loader import Campaign
from app.logs import JsonFormatter, RedactAccessPaths, RequestIdFilter, TextFormatter, log_config
from app.open_time.fallback_log import FallbackLog
from app.security.tokens import TokenSigner
from tests.conftest import SENDER


def record(message: str, *args: object, name: str = "app.test", **extra: object) -> logging.LogRecord:
    made = logging.LogRecord(name, logging.WARNING, __file__, 1, message, args, None)
    made.__dict__.update(extra)
    made.created = 1_790_000_000.25
    return made


def test_a_json_line_has_the_fields_and_extras() -> None:
    line = JsonFormatter().format(record("store down for %s", "demo", request_id="r1", block="picks"))
    assert orjson.loads(line) == {
        "ts": "2026-09-21T14:13:20.250Z",
        "level": "WARNING",
        "logger": "app.test",
        "message": "store down for demo",
        "request_id": "r1",
        "block": "picks",
    }


def test_a_text_line_reads_as_a_sentence() -> None:
    line = TextFormatter().format(record("store down for %s", "demo", request_id="r1", block="picks"))
    assert line == "2026-09-21T14:13:20.250Z WARNING app.test [r1] store down for demo block=picks"
    line = TextFormatter().format(record("started", request_id=None))
    assert line == "2026-09-21T14:13:20.250Z WARNING app.test started"


def test_tracebacks_are_kept_in_one_json_line() -> None:
    try:
        raise ValueError("bad value for ann@example.com")
    except ValueError:
        failed = record("render failed", request_id=None)
        failed.exc_info = sys.exc_info()
    line = JsonFormatter().format(failed)
    assert "\n" not in line
    parsed = orjson.loads(line)
    assert "ValueError: bad value for <email>" in parsed["exc"]
    assert "ann@" not in line


@pytest.mark.parametrize("address", ["ann@example.com", "ann\uff20example.com", "ann%40example.com"])
def test_no_address_survives_in_a_message_or_an_extra(address: str) -> None:
    for formatter in (JsonFormatter(), TextFormatter()):
        line = formatter.format(record("no profile for %s", address, request_id=None, who=address))
        assert "example.com" not in line and "<email>" in line


def test_the_access_filter_redacts_the_path_and_adds_fields() -> None:
    access = record(
        '%s - "%s %s HTTP/%s" %d',
        "10.0.0.1:5000",
        "GET",
        "/api/customers/ann%40example.com/personalization?campaign=demo",
        "1.1",
        401,
        name="uvicorn.access",
        request_id="r2",
    )
    assert RedactAccessPaths().filter(access)
    parsed = orjson.loads(JsonFormatter().format(access))
    assert (
        parsed["message"]
        == '10.0.0.1:5000 - "GET /api/customers/{id}/personalization?campaign=… HTTP/1.1" 401'
    )
    assert (parsed["path"], parsed["status"], parsed["method"]) == (
        "/api/customers/{id}/personalization?campaign=…",
        401,
        "GET",
    )
    text = TextFormatter().format(access)
    assert text.endswith(
        '[r2] 10.0.0.1:5000 - "GET /api/customers/{id}/personalization?campaign=… HTTP/1.1" 401'
    )


def test_the_config_names_our_loggers_and_keeps_libraries_at_warning() -> None:
    config = log_config("debug", "json")
    assert config["formatters"]["main"]["()"] == "app.logs.JsonFormatter"
    for name in ("app", "opentime", "uvicorn"):
        assert config["loggers"][name]["level"] == "DEBUG"
    assert config["loggers"]["uvicorn.access"]["filters"] == ["access_paths"]
    assert config["root"]["level"] == "WARNING"  # httpx at info would log upstream URLs (recipient ids)
    assert log_config("info", "text")["formatters"]["main"]["()"] == "app.logs.TextFormatter"


class Lines(logging.Handler):
    """Records of one logger as the configured handler would see them (with the request id filter)."""

    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []
        self.addFilter(RequestIdFilter())

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def audit_lines() -> Iterator[Lines]:
    yield from attached("opentime.audit")


@pytest.fixture
def app_lines() -> Iterator[Lines]:
    yield from attached("app")


def attached(name: str) -> Iterator[Lines]:
    """A ``Lines`` handler on logger ``name`` at info (as ``log_config`` sets it), removed afterwards."""
    lines = Lines()
    with attached_to(name, lines):
        yield lines


@contextmanager
def attached_to(name: str, lines: Lines) -> Iterator[None]:
    logger = logging.getLogger(name)
    level = logger.level
    logger.addHandler(lines)
    logger.setLevel(logging.INFO)
    try:
        yield
    finally:
        logger.removeHandler(lines)
        logger.setLevel(level)


def test_api_requests_get_an_id_echoed_and_on_their_lines(client: TestClient, audit_lines: Lines) -> None:
    answer = client.post("/api/render", json={})
    generated = answer.headers["x-request-id"]
    assert len(generated) == 32
    kept = client.post("/api/render", json={}, headers={"X-Request-Id": "cdn-7f3a:1"})
    assert kept.headers["x-request-id"] == "cdn-7f3a:1"
    # Too long or with characters a log or a header should not carry: replaced, not echoed.
    for bad in ("x" * 129, "ann@example.com", "a b", "é"):
        replaced = client.post("/api/render", json={}, headers={"X-Request-Id": bad.encode()})
        assert replaced.headers["x-request-id"] != bad and len(replaced.headers["x-request-id"]) == 32
    ids = [r.request_id for r in audit_lines.records]  # type: ignore[attr-defined]
    assert ids[:2] == [generated, "cdn-7f3a:1"] and len(ids) == 6


def test_an_open_gets_an_id_only_when_it_logs(
    client: TestClient, signer: TokenSigner, app_lines: Lines
) -> None:
    good = signer.sign("demo", "cust-0000001", now=int(time.time()))
    tampered = good[:-3] + ("BBB" if good.endswith("AAA") else "AAA")
    headers = {"AMP-Email-Sender": SENDER, "X-Request-Id": "cdn-1"}
    assert "x-request-id" not in client.get(f"/v1/{good}/list/picks.json", headers=headers).headers
    assert app_lines.records == []
    # The first fallback of its kind and block is logged: the answer names the line's id (the CDN's).
    first = client.get(f"/v1/{tampered}/list/hello.json", headers=headers)
    assert first.headers["x-opentime-fallback"] == "token-bad-signature"
    assert first.headers["x-request-id"] == "cdn-1"
    # The next one within the interval is only counted: no line, so no id.
    second = client.get(f"/v1/{tampered}/list/hello.json", headers={"AMP-Email-Sender": SENDER})
    assert "x-request-id" not in second.headers
    assert [r.request_id for r in app_lines.records] == ["cdn-1"]  # type: ignore[attr-defined]


def test_fallbacks_are_one_line_per_reason_kind_and_block_per_interval() -> None:
    now = [0.0]
    log = FallbackLog(logging.getLogger("t.fallbacks"), interval_s=60, clock=lambda: now[0])
    demo = Campaign(name="demo", title="Demo", lists={})
    block = SimpleNamespace(name="picks")

    def opened() -> dict[str, object]:  # the scope of an open, as the pipeline has it
        return {"type": "http", "headers": []}

    def fallbacks() -> list[bytes | None]:
        ids = [log.fallback(opened(), "store-error", "list", demo, block) for _ in range(500)]
        log.fallback(opened(), "store-error", "list", demo, None)
        log.fallback(opened(), "token-expired", "list", demo, block)
        now[0] = 61
        log.fallback(opened(), "store-error", "list", demo, block)
        return ids

    lines = Lines()
    with attached_to("t.fallbacks", lines):
        ids = contextvars.Context().run(fallbacks)  # as in a request's task: nothing left behind
    assert [(r.levelname, r.getMessage()) for r in lines.records] == [
        ("WARNING", "open-time fallback store-error: list block demo/picks"),
        ("WARNING", "open-time fallback store-error: list block demo/-"),
        ("INFO", "open-time fallback token-expired: list block demo/picks"),
        (
            "WARNING",
            "open-time fallback store-error: list block demo/picks (and 499 more like it in the last 60 s)",
        ),
    ]
    last = lines.records[-1]
    fields = ("reason", "kind", "campaign", "block", "suppressed")
    assert [getattr(last, name) for name in fields] == ["store-error", "list", "demo", "picks", 499]
    # The open whose line was written gets its id back (for X-Request-Id); the counted ones none.
    assert ids[0] == lines.records[0].request_id.encode()  # type: ignore[attr-defined]
    assert ids[1:] == [None] * 499
