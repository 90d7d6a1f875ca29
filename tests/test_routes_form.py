"""The amp-form endpoint through the full ASGI app (lifespan, real SQLite file, a campaign in tmp_path)."""

from __future__ import annotations

import asyncio
import shutil
import sqlite3
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import httpx
import orjson
import pytest
from starlette.testclient import TestClient

from app.app import create_app
from app.campaigns.urls import Tokens, campaign_urls, template_urls
from app.config import PROJECT_ROOT, Settings
from app.demo import recipient_id
from app.ingest.events import Event, parse_event
from app.open_time.kinds.form import MAX_BODY_BYTES, Rejected, read_form
from app.security.tokens import TokenSigner
from app.services import Services, load_campaigns_for
from app.store import SQLiteProfileStore
from app.store.base import EventStatus
from tests.conftest import BASE_URL, SENDER

T = TypeVar("T")
AMP = {"AMP-Email-Sender": SENDER}
URLENCODED = {**AMP, "Content-Type": "application/x-www-form-urlencoded"}
FORMS = """
[blocks.rate]
kind = "form"
success_message = "Thanks for your rating!"
[blocks.rate.fields]
rating = { type = "integer", min = 1, max = 5 }
comment = { type = "text", max_length = 200, required = false }
topics = { type = "choice", choices = ["shoes", "outdoor"], multiple = true, required = false }
[blocks.rate.profile]
"preferences.topics" = "topics"
last_rating = "rating"

[blocks.rename]
kind = "form"
[blocks.rename.fields]
nickname = { type = "text", max_length = 40 }
[blocks.rename.profile]
first_name = "nickname"
"""


@pytest.fixture
def form_settings(settings: Settings, tmp_path: Path) -> Settings:
    """The demo campaign plus two form blocks, in a templates folder of the test's own."""
    templates, static = tmp_path / "amp", tmp_path / "static"
    shutil.copytree(PROJECT_ROOT / "amp_templates" / "demo", templates / "demo")
    shutil.copytree(PROJECT_ROOT / "static", static)
    with (templates / "demo" / "blocks.toml").open("a", encoding="utf-8") as blocks:
        blocks.write(FORMS)
    return settings.replace(templates_dir=templates, static_dir=static)


@pytest.fixture
def client(form_settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(form_settings), base_url=BASE_URL, follow_redirects=False) as test_client:
        yield test_client


def services(client: TestClient) -> Services:
    found: Services = client.app_state["services"]
    return found


def on_store(client: TestClient, fn: Callable[[sqlite3.Connection], T], *, write: bool = False) -> T:
    """Run ``fn`` on the app's own store connections, in the app's event loop."""
    store = services(client).store
    assert isinstance(store, SQLiteProfileStore) and client.portal is not None
    return client.portal.call(store.run_write if write else store.run_read, fn)


def stored(client: TestClient) -> list[tuple[str, str, str, Any]]:
    rows = on_store(
        client,
        lambda conn: conn.execute(
            "SELECT campaign, block, recipient_id, payload FROM form_submissions ORDER BY created_at"
        ).fetchall(),
    )
    return [(c, b, r, orjson.loads(p)) for c, b, r, p in rows]


def profile(client: TestClient, recipient: str) -> tuple[dict[str, Any], int] | None:
    assert client.portal is not None
    found = client.portal.call(services(client).store.profiles.get, recipient)
    return None if found is None else (orjson.loads(found.attributes), found.version)


def form_path(signer: TokenSigner, block: str = "rate", recipient: str = recipient_id(1)) -> str:
    return f"/v1/{signer.sign('demo', recipient, now=int(time.time()))}/form/{block}"


def post(
    client: TestClient, path: str, content: bytes | str, headers: dict[str, str] | None = None
) -> httpx.Response:
    return client.post(path, content=content, headers=URLENCODED if headers is None else headers)


def multipart(fields: list[tuple[str, str]], *, filename: str | None = None) -> tuple[bytes, dict[str, str]]:
    boundary = "opentime-test-boundary"
    extra = f'; filename="{filename}"' if filename else ""
    parts = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"{extra}\r\n\r\n{value}\r\n'
        for name, value in fields
    ]
    body = ("".join(parts) + f"--{boundary}--\r\n").encode()
    return body, {**AMP, "Content-Type": f"multipart/form-data; boundary={boundary}"}


def assert_json_reply(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status
    assert response.headers["content-type"] == "application/json"
    assert response.headers["cache-control"] == "private, no-store"
    assert "location" not in response.headers and "amp-redirect-to" not in response.headers
    body: dict[str, Any] = response.json()
    return body


def test_urlencoded_submission_is_stored_once_and_answered_in_json(
    client: TestClient, signer: TokenSigner
) -> None:
    response = post(client, form_path(signer), "rating=4&comment=Great+fit&topics=shoes")
    body = assert_json_reply(response, 200)
    assert response.headers["amp-email-allow-sender"] == SENDER
    assert body == {
        "message": "Thanks for your rating!",
        "duplicate": False,
        "submitted": {"rating": 4, "comment": "Great fit", "topics": ["shoes"]},
    }
    assert stored(client) == [
        ("demo", "rate", recipient_id(1), {"comment": "Great fit", "rating": 4, "topics": ["shoes"]})
    ]


def test_resubmit_is_idempotent_whatever_the_field_order(client: TestClient, signer: TokenSigner) -> None:
    assert (
        post(client, form_path(signer), "rating=4&topics=outdoor&topics=shoes").json()["duplicate"] is False
    )
    # Another token of the same recipient (re-sent email), fields in another order: the same answer.
    again = post(client, form_path(signer), "topics=shoes&rating=4&topics=outdoor")
    assert assert_json_reply(again, 200)["duplicate"] is True
    assert len(stored(client)) == 1
    assert post(client, form_path(signer), "rating=5").json()["duplicate"] is False
    assert post(client, form_path(signer, recipient=recipient_id(2)), "rating=4").json()["duplicate"] is False
    assert len(stored(client)) == 3


def test_multipart_submission_is_accepted(client: TestClient, signer: TokenSigner) -> None:
    body, headers = multipart([("rating", "3"), ("topics", "outdoor"), ("comment", "caf\u00e9")])
    reply = assert_json_reply(post(client, form_path(signer), body, headers), 200)
    assert reply["submitted"] == {"rating": 3, "comment": "caf\u00e9", "topics": ["outdoor"]}
    assert stored(client)[0][3]["comment"] == "caf\u00e9"


def test_multipart_file_part_is_refused(client: TestClient, signer: TokenSigner) -> None:
    body, headers = multipart([("rating", "3")], filename="evil.exe")
    assert "not valid" in assert_json_reply(post(client, form_path(signer), body, headers), 400)["error"]
    assert stored(client) == []


def test_oversized_body_is_413_and_stores_nothing(client: TestClient, signer: TokenSigner) -> None:
    response = post(client, form_path(signer), "rating=4&comment=" + "x" * MAX_BODY_BYTES)
    assert "larger than" in assert_json_reply(response, 413)["error"]
    assert stored(client) == []


def test_body_is_capped_even_without_content_length() -> None:
    chunks = [b"rating=4&comment=", b"x" * (MAX_BODY_BYTES // 2), b"x" * (MAX_BODY_BYTES // 2)]
    messages = [{"type": "http.request", "body": c, "more_body": i < 2} for i, c in enumerate(chunks)]
    scope = {"type": "http", "headers": [(b"content-type", b"application/x-www-form-urlencoded")]}

    async def receive() -> dict[str, Any]:
        return messages.pop(0)

    with pytest.raises(Rejected, match="larger than") as info:
        asyncio.run(read_form(scope, receive))
    assert info.value.status == 413
    assert messages == []  # it stopped reading at the limit


@pytest.mark.parametrize(
    "content_type", ["application/json", "text/plain", "multipart/mixed; boundary=x", None]
)
def test_wrong_content_type_is_415(client: TestClient, signer: TokenSigner, content_type: str | None) -> None:
    headers = AMP if content_type is None else {**AMP, "Content-Type": content_type}
    response = post(client, form_path(signer), '{"rating": 4}', headers)
    assert "application/x-www-form-urlencoded" in assert_json_reply(response, 415)["error"]
    assert stored(client) == []


def test_missing_and_invalid_fields_are_400_with_a_message_per_field(
    client: TestClient, signer: TokenSigner
) -> None:
    response = post(client, form_path(signer), "comment=hi&topics=hats")
    assert assert_json_reply(response, 400) == {
        "error": "some answers are missing or invalid",
        "fields": {"rating": "is required", "topics": "must be among: shoes, outdoor"},
    }
    response = post(client, form_path(signer), "rating=9")
    assert assert_json_reply(response, 400)["fields"] == {"rating": "must be an integer from 1 to 5"}
    assert post(client, form_path(signer), b"rating=%FF", URLENCODED).status_code == 400  # not UTF-8
    assert stored(client) == []


def test_cors_rejection_comes_before_any_side_effect(client: TestClient, signer: TokenSigner) -> None:
    # CSRF: a page or an email from another sender posts to a recipient's form URL.
    path = form_path(signer)
    foreign = {"AMP-Email-Sender": "spam@evil.example", "Content-Type": "application/x-www-form-urlencoded"}
    for headers in (foreign, {"Content-Type": "application/x-www-form-urlencoded"}):
        response = post(client, path, "rating=1", headers)
        assert (response.status_code, response.content) == (403, b"")
        assert not [h for h in response.headers if h.startswith(("access-control", "amp-"))]
    assert stored(client) == []
    untouched = profile(client, recipient_id(1))
    assert untouched is not None and "last_rating" not in untouched[0]


def test_version_1_cors_and_the_added_source_origin_are_ignored(
    client: TestClient, signer: TokenSigner
) -> None:
    path = form_path(signer) + "?__amp_source_origin=news%40example.com"
    headers = {"Origin": "https://mail.google.com", "Content-Type": "application/x-www-form-urlencoded"}
    response = post(client, path, "rating=2&__amp_source_origin=news%40example.com", headers)
    assert assert_json_reply(response, 200)["submitted"]["rating"] == 2
    assert response.headers["access-control-allow-origin"] == "https://mail.google.com"
    assert response.headers["amp-access-control-allow-source-origin"] == SENDER
    assert stored(client)[0][3] == {"comment": None, "rating": 2, "topics": []}


def test_bad_expired_and_shared_tokens_store_nothing(client: TestClient, signer: TokenSigner) -> None:
    token = signer.sign("demo", recipient_id(1), now=int(time.time()))
    tampered = token[:-3] + ("AAA" if not token.endswith("AAA") else "BBB")
    reply = assert_json_reply(post(client, f"/v1/{tampered}/form/rate", "rating=4"), 403)
    assert reply == {"error": "this form link is not valid", "reason": "token-bad-signature"}
    old = signer.sign("demo", recipient_id(1), now=int(time.time()) - 40 * 86400, ttl_seconds=86400)
    reply = assert_json_reply(post(client, f"/v1/{old}/form/rate", "rating=4"), 403)
    assert reply == {"error": "this form has expired", "reason": "token-expired"}
    shared = signer.sign_shared("demo", now=int(time.time()))
    assert (
        assert_json_reply(post(client, f"/v1/{shared}/form/rate", "rating=4"), 403)["reason"]
        == "no-recipient"
    )
    assert stored(client) == []


def test_unknown_form_and_malformed_paths_are_404(client: TestClient, signer: TokenSigner) -> None:
    assert assert_json_reply(post(client, form_path(signer, "picks"), "rating=4"), 404) == {
        "error": "unknown form"
    }
    assert post(client, form_path(signer, "nope"), "rating=4").status_code == 404
    other = signer.sign("no-such-campaign", recipient_id(1), now=int(time.time()))
    assert post(client, f"/v1/{other}/form/rate", "rating=4").status_code == 404
    for path in (form_path(signer) + "/", form_path(signer)[: -len("rate")], "/v1/x/form"):
        assert_json_reply(post(client, path, "rating=4"), 404)
    assert stored(client) == []


def test_other_methods_are_405_and_options_is_the_cors_preflight(
    client: TestClient, signer: TokenSigner
) -> None:
    path = form_path(signer)
    for method in ("GET", "HEAD", "PUT"):
        response = client.request(method, path, headers=AMP)
        assert (response.status_code, response.headers["allow"]) == (405, "POST, OPTIONS")
        assert response.headers["content-type"] == "application/json"
    options = client.options(path, headers=AMP)
    assert (options.status_code, options.headers["amp-email-allow-sender"]) == (204, SENDER)


def test_store_failure_is_503_try_again(client: TestClient, signer: TokenSigner) -> None:
    on_store(client, lambda conn: conn.execute("DROP TABLE form_submissions"), write=True)
    reply = assert_json_reply(post(client, form_path(signer), "rating=4"), 503)
    assert "try again" in reply["error"]


def test_profile_update_is_in_the_same_transaction(client: TestClient, signer: TokenSigner) -> None:
    trigger = "CREATE TRIGGER no_updates BEFORE UPDATE ON profiles BEGIN SELECT RAISE(ABORT, 'no'); END"
    on_store(client, lambda conn: conn.execute(trigger), write=True)
    assert post(client, form_path(signer), "rating=4").status_code == 503
    assert stored(client) == []  # the answer was rolled back with the failed profile write


def test_profile_update_sets_paths_and_bumps_the_version(client: TestClient, signer: TokenSigner) -> None:
    before = profile(client, recipient_id(3))
    assert before is not None
    post(client, form_path(signer, recipient=recipient_id(3)), "rating=5&topics=outdoor")
    after = profile(client, recipient_id(3))
    assert after is not None
    assert (after[0]["preferences"], after[0]["last_rating"], after[1]) == (
        {"topics": ["outdoor"]},
        5,
        before[1] + 1,
    )
    assert after[0]["first_name"] == before[0]["first_name"]  # the rest is untouched
    # A/B/A: the re-submitted first answer is a duplicate row, but the profile follows the latest answer.
    post(client, form_path(signer, recipient=recipient_id(3)), "rating=2")
    again = post(client, form_path(signer, recipient=recipient_id(3)), "rating=5&topics=outdoor")
    assert again.json()["duplicate"] is True
    final = profile(client, recipient_id(3))
    assert final is not None and (final[0]["last_rating"], final[1]) == (5, before[1] + 3)


def test_form_creates_a_profile_for_a_recipient_without_one(client: TestClient, signer: TokenSigner) -> None:
    post(client, form_path(signer, recipient="new-reader"), "rating=3")
    assert profile(client, "new-reader") == ({"preferences": {"topics": []}, "last_rating": 3}, 1)


def test_profile_update_is_visible_in_the_next_list_fetch(client: TestClient, signer: TokenSigner) -> None:
    token = signer.sign("demo", recipient_id(4), now=int(time.time()))
    hello = f"/v1/{token}/list/hello.json"
    first = client.get(hello, headers=AMP).json()["items"][0]["first_name"]
    assert client.get(hello, headers=AMP).json()["items"][0]["first_name"] == first  # now cached
    response = post(client, f"/v1/{token}/form/rename", "nickname=Zo%C3%AB")
    assert assert_json_reply(response, 200)["message"] == "Thank you!"
    assert client.get(hello, headers=AMP).json()["items"][0]["first_name"] == "Zo\u00eb"


def test_form_urls_for_templates_and_exports(form_settings: Settings) -> None:
    campaign = load_campaigns_for(form_settings)["demo"]
    tokens = Tokens(amp="tok", html="long")  # forms are AMP-only: the AMP-lifetime token
    assert template_urls("https://x.test", tokens, campaign)["form"] == {
        "rate": "https://x.test/v1/tok/form/rate",
        "rename": "https://x.test/v1/tok/form/rename",
    }
    assert campaign_urls("https://x.test", tokens, campaign)["form:rate"] == "https://x.test/v1/tok/form/rate"


def commit(client: TestClient, event: Event, now: float) -> list[EventStatus]:
    assert client.portal is not None
    return client.portal.call(services(client).store.events.commit, [event], now)


def rating_event(event_id: str, at: float, rating: int) -> Any:
    occurred_at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(at))
    item = {"id": event_id, "type": "profile.updated", "recipient": recipient_id(3)}
    item |= {"occurred_at": occurred_at, "payload": {"last_rating": rating}}
    return parse_event(item, now=time.time())


def test_an_older_event_arriving_later_does_not_overwrite_a_form_answer(
    client: TestClient, signer: TokenSigner
) -> None:
    submitted = time.time()
    post(client, form_path(signer, recipient=recipient_id(3)), "rating=4")
    older = rating_event("older", submitted - 3600, 1)
    assert commit(client, older, submitted) == ["applied"]
    answered = profile(client, recipient_id(3))
    assert answered is not None and answered[0]["last_rating"] == 4  # the user's answer is newer
    newer = rating_event("newer", submitted + 60, 2)
    commit(client, newer, submitted)
    updated = profile(client, recipient_id(3))
    assert updated is not None and updated[0]["last_rating"] == 2


def test_a_profile_change_reaches_the_invalidation_listeners(client: TestClient, signer: TokenSigner) -> None:
    seen: list[frozenset[str]] = []
    services(client).invalidation.subscribe(seen.append)
    path = form_path(signer, recipient=recipient_id(3))
    assert post(client, path, "rating=5").status_code == 200
    assert seen == [frozenset({recipient_id(3)})]
    assert post(client, path, "rating=5").status_code == 200  # the same answer: the profile is unchanged
    assert seen == [frozenset({recipient_id(3)})]
