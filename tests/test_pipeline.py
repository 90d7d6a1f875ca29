"""The one open-time pipeline: the same reasons, errors, metrics and last line of defence for every kind."""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from app.app import create_app
from app.config import PROJECT_ROOT, Settings
from app.content.lists import ListContent
from app.demo import recipient_id
from app.open_time.reasons import Reason, reason_of
from app.open_time.routes import ROUTES
from app.security.tokens import TokenError, TokenSigner
from app.upstream.client import UpstreamError
from tests.conftest import BASE_URL, SENDER

AMP = {"AMP-Email-Sender": SENDER}


def subclasses(cls: type) -> Iterator[type]:
    for sub in cls.__subclasses__():
        yield sub
        yield from subclasses(sub)


@pytest.mark.parametrize("root", [TokenError, UpstreamError])
def test_every_reason_another_layer_reports_is_one_of_ours(root: type) -> None:
    # A code missing from the enum would be counted and sent as "internal-error", hiding the real cause.
    for cls in [root, *subclasses(root)]:
        assert reason_of(cls.reason) is Reason(cls.reason), cls.__name__


def test_an_unknown_code_is_an_internal_error() -> None:
    assert reason_of("no-such-reason") is Reason.INTERNAL_ERROR


def test_every_route_refuses_urls_of_another_shape_and_other_methods(client: TestClient) -> None:
    for route in ROUTES:
        wrong = client.get(f"/v1/t/{route.segment}/a/b/c", headers=AMP)
        assert wrong.status_code == 404 and route.usage in wrong.json()["error"], route.segment
        method = "PUT"
        refused = client.request(method, f"/v1/t/{route.segment}/x.json", headers=AMP)
        if route.segment == "view":
            refused = client.request(method, "/v1/t/view", headers=AMP)
        if route.segment == "img":
            refused = client.request(method, "/v1/t/img/x.png", headers=AMP)
        if route.segment == "click":
            refused = client.request(method, "/v1/t/click/x/0", headers=AMP)
        assert refused.status_code == 405, route.segment
        # CORS routes also answer OPTIONS (the AMP CORS preflight), so their Allow names it.
        assert refused.headers["allow"] == ", ".join((*route.methods, *(["OPTIONS"] if route.cors else [])))
        assert refused.json() == {"error": f"method PUT not allowed: use {route.methods[0]}"}


@pytest.fixture
def broken_fragment(tmp_path: Path, settings: Settings) -> Iterator[TestClient]:
    """The demo campaign, with a fragment template that fails at open time (a real authoring mistake)."""
    templates = tmp_path / "amp_templates"
    shutil.copytree(PROJECT_ROOT / "amp_templates", templates)
    fragment = templates / "demo" / "fragments" / "picks.html"
    fragment.write_text(fragment.read_text() + "{{ items.first.name.upper() }}")
    app = create_app(replace(settings, templates_dir=templates))
    with TestClient(app, base_url=BASE_URL) as client:
        yield client


def test_a_kind_that_fails_answers_its_generic_fallback_and_is_counted(
    broken_fragment: TestClient, signer: TokenSigner, caplog: pytest.LogCaptureFixture
) -> None:
    token = signer.sign("demo", recipient_id(1), now=int(time.time()))
    with caplog.at_level(logging.ERROR, logger="app.open_time.pipeline"):
        response = broken_fragment.get(f"/v1/{token}/html/picks")
    assert (response.status_code, response.text) == (200, "")
    assert response.headers["x-opentime-fallback"] == "internal-error"
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    assert "open-time fragment request failed" in caplog.text
    assert recipient_id(1) not in caplog.text  # no personal data in logs
    metrics = broken_fragment.get("/metrics").text
    assert 'opentime_open_responses_total{kind="fragment",outcome="internal-error"} 1.0' in metrics
    # The other kinds of the same email are not affected.
    listed = broken_fragment.get(f"/v1/{token}/list/picks.json", headers=AMP)
    assert listed.status_code == 200 and "x-opentime-fallback" not in listed.headers


def test_head_sends_the_headers_of_get_without_the_body(client: TestClient, signer: TokenSigner) -> None:
    token = signer.sign("demo", recipient_id(2), now=int(time.time()))
    for path in (f"/v1/{token}/img/banner.png", f"/v1/{token}/html/picks", f"/v1/{token}/view"):
        got, head = client.get(path), client.head(path)
        assert head.status_code == 200 and head.content == b""
        assert head.headers["content-length"] == str(len(got.content)), path
        assert head.headers["content-type"] == got.headers["content-type"]


def test_a_kind_that_fails_with_its_block_known_answers_the_blocks_designed_fallback(
    client: TestClient, signer: TokenSigner, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: object) -> None:
        raise RuntimeError("injected fault")

    token = signer.sign("demo", recipient_id(1), now=int(time.time()))
    static = client.get(
        f"/v1/{signer.sign('demo', 'nobody', now=int(time.time()))}/list/picks.json", headers=AMP
    )
    monkeypatch.setattr(ListContent, "cached", broken)
    response = client.get(f"/v1/{token}/list/picks.json", headers=AMP)
    assert (response.status_code, response.headers["x-opentime-fallback"]) == (200, "internal-error")
    assert response.content == static.content  # the block's static items, not an empty list
