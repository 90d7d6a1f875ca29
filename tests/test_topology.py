"""The deployed topology, through its CDN: three ``opentime serve`` nodes behind a real Varnish running
the shipped deploy/varnish/default.vcl (tests/topology.py starts it all on 127.0.0.1).

What a mail client sees through the proxy: images kept briefly by the CDN and never by mail proxies,
per-recipient and per-sender JSON never shared, an event visible within the promised freshness, a
purge by recipient or campaign evicting exactly those copies, a killed node changing no answer and
a restarted one getting traffic again with no manual step.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from urllib.parse import quote

import httpx
import orjson
import pytest
import redis
from click.testing import CliRunner

from app.cli.main import main
from app.content.cache_policy import IMAGE_CDN_TTL_SECONDS, NO_CACHE
from app.demo import recipient_id
from app.security.keyring import load_keyring
from app.security.tokens import TokenSigner
from app.security.webhook_auth import sign_header
from tests.conftest import SENDER
from tests.pg import fresh_pg_url
from tests.redis_tools import SHARED_URL, answers, unavailable, wait_until
from tests.topology import (
    OTHER_SENDER,
    WEBHOOK_SECRET,
    Topology,
    load_demo,
    new_keys,
    start_all,
    varnishd_path,
)

pytestmark = pytest.mark.server
CDN_ONLY = {"surrogate-key", "surrogate-control", "cdn-cache-control"}
FALLBACK = "x-opentime-fallback"


@pytest.fixture(scope="module")
def topology(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Topology]:
    """One topology for the module (starting it takes seconds); each test uses recipients of its own."""
    varnishd_path()
    if not answers(SHARED_URL):
        unavailable(f"Redis does not answer at {SHARED_URL}")
    folder = tmp_path_factory.mktemp("topology")
    prefix = f"test:{uuid.uuid4().hex[:12]}:"
    try:
        with fresh_pg_url() as pg_url:
            load_demo(pg_url)
            with Topology(folder, new_keys(folder), pg_url, SHARED_URL, prefix) as running:
                yield running
    finally:
        client = redis.Redis.from_url(SHARED_URL)
        keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
        if keys:
            client.delete(*keys)
        client.close()


@pytest.fixture(scope="module")
def signer(topology: Topology) -> TokenSigner:
    return TokenSigner(load_keyring(topology.folder / "keys.json"))


def get(url: str, **headers: str) -> httpx.Response:
    return httpx.get(url, headers=headers, timeout=10)


def image(topology: Topology, token: str, name: str = "banner.png") -> httpx.Response:
    response = get(f"{topology.base}/v1/{token}/img/{name}")
    assert response.status_code == 200 and response.headers["content-type"].startswith("image/")
    assert not CDN_ONLY & set(response.headers), "the CDN's own headers reached the client"
    assert response.headers["cache-control"] == NO_CACHE.decode()  # mail proxies refetch at every open
    return response


def picks(base: str, token: str, sender: str) -> httpx.Response:
    return get(f"{base}/v1/{token}/list/picks.json", **{"AMP-Email-Sender": sender})


def names(response: httpx.Response) -> list[str]:
    assert response.status_code == 200 and FALLBACK not in response.headers, response.text
    return [item["name"] for item in response.json()["items"]]


def personal(signer: TokenSigner, index: int) -> str:
    return signer.sign("demo", recipient_id(index), now=int(time.time()))


def post_event(topology: Topology, index: int, payload: dict[str, object]) -> None:
    """A signed ``profile.updated`` event, posted through the CDN (which passes it to a node)."""
    body = orjson.dumps(
        {
            "id": f"topology-{uuid.uuid4().hex}",
            "type": "profile.updated",
            "recipient": recipient_id(index),
            "occurred_at": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
            "payload": payload,
        }
    )
    headers = {"content-type": "application/json"}
    headers["opentime-signature"] = sign_header([WEBHOOK_SECRET], int(time.time()), body)
    response = httpx.post(f"{topology.base}/webhooks/events", content=body, headers=headers, timeout=10)
    assert response.status_code == 200, response.text


def pick(name: str) -> dict[str, object]:
    """One recommendation with every field the demo's picks block needs."""
    return {"name": name, "price": 1.0, "sku": "sku-t", "image": "t.jpg"}


def ban(topology: Topology, key: str, token: str | None) -> httpx.Response:
    headers = {"Surrogate-Key": key} | ({} if token is None else {"Purge-Token": token})
    return httpx.request("BAN", f"{topology.base}/", headers=headers, timeout=10)


def purge(topology: Topology, *args: str) -> str:
    """``opentime cdn purge`` against the topology's CDN; its output."""
    keys = str(topology.folder / "keys.json")
    command = ["cdn", "purge", "--url", topology.base, "--keys", keys, *args]
    result = CliRunner().invoke(main, command, env={"VARNISH_PURGE_TOKEN": topology.purge_token})
    assert result.exit_code == 0, result.output
    return result.stdout


def test_a_recipients_image_is_kept_briefly_by_the_cdn_and_by_no_one_else(
    topology: Topology, signer: TokenSigner
) -> None:
    token = personal(signer, 1)
    first, second = image(topology, token), image(topology, token)
    assert (first.headers["x-cache"], second.headers["x-cache"]) == ("MISS", "HIT")
    assert second.content == first.content and second.headers["etag"] == first.headers["etag"]
    assert 0 <= int(second.headers["age"]) <= IMAGE_CDN_TTL_SECONDS
    assert FALLBACK not in first.headers
    # Another recipient's image is theirs, fetched from a node, not the first one's copy.
    other = image(topology, personal(signer, 2))
    assert other.headers["x-cache"] == "MISS" and other.headers["etag"] != first.headers["etag"]


def test_shared_countdowns_and_fallbacks_are_kept_seconds(topology: Topology, signer: TokenSigner) -> None:
    # A bad link's fallback image: one copy for everyone who has it, for 5 s.
    bad = "not-a-valid-token"
    fallback = image(topology, bad)
    assert FALLBACK in fallback.headers and fallback.headers["x-cache"] == "MISS"
    fallback_hit = image(topology, bad)
    assert fallback_hit.headers["x-cache"] == "HIT" and fallback_hit.content == fallback.content
    kept_since = time.monotonic()

    # A running campaign countdown: one copy for everyone, at most a second old (frame 0 is the time left).
    shared = signer.sign_shared("demo", now=int(time.time()), ttl_seconds=86400)
    for _ in range(10):  # two fetches may straddle the copy's second: try again
        first, second = image(topology, shared, "countdown.gif"), image(topology, shared, "countdown.gif")
        if second.headers["x-cache"] == "HIT":
            break
    assert second.headers["x-cache"] == "HIT" and second.content == first.content
    assert int(second.headers["age"]) <= 1
    time.sleep(2.1)
    later = image(topology, shared, "countdown.gif")
    assert later.headers["x-cache"] == "MISS" and later.headers["etag"] != first.headers["etag"]

    # The campaign-wide banner is shared too (for the block's cache_ttl_seconds).
    banners = [image(topology, shared) for _ in range(2)]
    assert banners[1].headers["x-cache"] == "HIT" and banners[1].content == banners[0].content

    time.sleep(max(0.0, 5.5 - (time.monotonic() - kept_since)))
    expired = image(topology, bad)
    assert expired.headers["x-cache"] == "MISS" and expired.content == fallback.content


def test_amp_list_json_is_never_shared_across_recipients_or_senders(
    topology: Topology, signer: TokenSigner
) -> None:
    post_event(topology, 5, {"recommendations": [pick("Only for five")]})
    four, five = personal(signer, 4), personal(signer, 5)
    wait_until(lambda: names(picks(topology.base, five, SENDER)) == ["Only for five"], 1.0, "five is stale")
    direct = topology.nodes[0].base
    for token in (four, five, four, five):
        for sender in (SENDER, OTHER_SENDER):
            answer = picks(topology.base, token, sender)
            assert names(answer) == names(picks(direct, token, sender))  # what a node serves them
            assert answer.headers["x-cache"] == "PASS" and answer.headers["age"] == "0"
            assert answer.headers["amp-email-allow-sender"] == sender  # never another sender's echo
            assert answer.headers["cache-control"] == "private, no-store"
    assert "Only for five" not in names(picks(topology.base, four, SENDER))

    # A sender not allowed is refused however often an allowed one asked for the same URL.
    refused = picks(topology.base, four, "mallory@example.net")
    assert refused.status_code == 403 and refused.content == b""
    assert "amp-email-allow-sender" not in refused.headers

    # CORS version 1: every viewer origin gets its own echo, not the previous request's.
    url = f"{topology.base}/v1/{four}/list/picks.json?__amp_source_origin={quote(SENDER)}"
    for origin in ("https://mail.google.com", "https://mail.yahoo.com", "https://mail.google.com"):
        answer = get(url, Origin=origin)
        assert answer.status_code == 200 and answer.headers["x-cache"] == "PASS"
        assert answer.headers["access-control-allow-origin"] == origin
        assert answer.headers["amp-access-control-allow-source-origin"] == SENDER


def test_an_event_shows_within_the_promised_freshness_and_stale_copies_only_while_no_node_answers(
    topology: Topology, signer: TokenSigner
) -> None:
    token, bystander = personal(signer, 6), personal(signer, 9)
    cached, kept = image(topology, token), image(topology, bystander)
    assert image(topology, token).headers["x-cache"] == "HIT"
    post_event(topology, 6, {"first_name": "Zora", "recommendations": [pick("Fresh")]})
    posted = time.monotonic()
    # amp-list JSON is never cached: the next open shows the event.
    assert names(picks(topology.base, token, SENDER)) == ["Fresh"]
    # The image: the CDN's copy until its 30 s are over, then the new one (not the stale copy).
    assert image(topology, token).headers["etag"] == cached.headers["etag"]
    wait_until(
        lambda: image(topology, token).headers["etag"] != cached.headers["etag"],
        IMAGE_CDN_TTL_SECONDS + 3,
        "the new image never showed through the CDN",
    )
    assert time.monotonic() - posted <= IMAGE_CDN_TTL_SECONDS + 1

    # stale-if-error: the bystander's copy has expired too; with every node down, the CDN serves it
    # rather than an error, and a URL it never kept gets the error it cannot avoid.
    for node in topology.nodes:
        node.kill()
    try:
        wait_until(lambda: not any(topology.varnish.healthy().values()), 10.0, "probes missed the outage")
        stale = image(topology, bystander)
        assert stale.content == kept.content and int(stale.headers["age"]) > IMAGE_CDN_TTL_SECONDS
        assert get(f"{topology.base}/v1/{personal(signer, 11)}/img/banner@2x.png").status_code == 503
    finally:
        start_all(topology.nodes)
        topology.wait_healthy()
    assert image(topology, bystander).headers["x-cache"] == "MISS"  # healthy again: no stale copy


def test_a_purge_by_recipient_or_campaign_evicts_exactly_those_copies(
    topology: Topology, signer: TokenSigner
) -> None:
    seven, eight = personal(signer, 7), personal(signer, 8)
    shared = signer.sign_shared("demo", now=int(time.time()), ttl_seconds=86400)
    old = {token: image(topology, token) for token in (seven, eight, shared)}
    assert all(image(topology, token).headers["x-cache"] == "HIT" for token in old)
    post_event(topology, 7, {"first_name": "Purgatory"})
    assert image(topology, seven).headers["etag"] == old[seven].headers["etag"]  # the CDN's copy

    # Only the operator may purge: a token, and (not testable from here) an address in the ACL.
    assert ban(topology, "c-demo", None).status_code == 403
    assert ban(topology, "c-demo", "not-the-token").status_code == 403
    assert ban(topology, "c-demo|.*", topology.purge_token).status_code == 400  # no regex injection
    assert image(topology, eight).headers["x-cache"] == "HIT"

    # By recipient: their copies go (the next open is a miss with the new data), nobody else's.
    out = purge(topology, recipient_id(7))
    assert out.startswith("r-") and ": 200 200 Banned r-" in out
    fresh = image(topology, seven)
    assert fresh.headers["x-cache"] == "MISS" and fresh.headers["etag"] != old[seven].headers["etag"]
    assert image(topology, eight).headers["x-cache"] == "HIT"
    assert image(topology, shared).headers["x-cache"] == "HIT"

    # By campaign: every copy of its images, personal and shared.
    assert "c-demo: 200 200 Banned c-demo" in purge(topology, "--campaign", "demo")
    assert image(topology, eight).headers["x-cache"] == "MISS"
    assert image(topology, shared).headers["x-cache"] == "MISS"
    assert image(topology, seven).headers["x-cache"] == "MISS"


def open_everything(topology: Topology, signer: TokenSigner, index: int) -> list[httpx.Response]:
    """An open of recipient ``index``: their picks (always from a node) and banner (a new URL each second)."""
    token = personal(signer, index)
    return [picks(topology.base, token, SENDER), get(f"{topology.base}/v1/{token}/img/banner.png")]


def test_a_killed_node_changes_no_answer_and_a_restarted_one_rejoins(
    topology: Topology, signer: TokenSigner
) -> None:
    victim = topology.nodes[1]
    victim.kill()
    answered: list[httpx.Response] = []
    until = time.monotonic() + 4.0  # before and after the probes notice
    while time.monotonic() < until or len(answered) < 40:
        answered += open_everything(topology, signer, 10 + len(answered) % 30)
    assert all(a.status_code == 200 and FALLBACK not in a.headers for a in answered)
    assert all(len(names(a)) == 4 for a in answered if a.headers["content-type"] == "application/json")
    assert topology.varnish.healthy()[victim.name] is False

    victim.start()  # the same address, nothing else done
    wait_until(lambda: topology.varnish.healthy()[victim.name], 10.0, "the CDN never took the node back")
    before = [node.opens_served() for node in topology.nodes]
    for i in range(30):
        assert names(picks(topology.base, personal(signer, 10 + i), SENDER))
    after = [node.opens_served() for node in topology.nodes]
    served = [b - a for a, b in zip(before, after, strict=True)]
    assert sum(served) == 30 and min(served) >= 5, f"opens per node: {served}"


def test_the_shipped_vcl_names_three_backends_and_the_launcher_rewrites_only_their_addresses() -> None:
    from tests.topology import VCL, topology_vcl

    shipped = VCL.read_text()
    rewritten = topology_vcl([1001, 1002, 1003])
    assert [line for line in rewritten.splitlines() if line not in shipped.splitlines()] == [
        f'backend node{i} {{ .host = "127.0.0.1"; .port = "100{i}"; .probe = healthz; '
        ".connect_timeout = 1s; .first_byte_timeout = 5s; }"
        for i in (1, 2, 3)
    ]
    with pytest.raises(ValueError, match="declares 3 backends"):
        topology_vcl([1001])
