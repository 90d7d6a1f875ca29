"""``/v1/{token}/img/...`` through the full app: decoded pixels, fallbacks on every failure, headers."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from PIL import Image, ImageChops
from starlette.testclient import TestClient

from app.app import create_app
from app.config import Settings
from app.demo import demo_rows, recipient_id
from app.images import render
from app.images.layout import prepare
from app.security.tokens import TokenSigner
from tests.conftest import BASE_URL
from tests.metrics_tools import sample
from tests.test_images_helpers import decode, write_campaign

NO_CACHE = "no-cache, no-store, must-revalidate, max-age=0"


def url(signer: TokenSigner, name: str, recipient: str | None = recipient_id(1), **kw: int) -> str:
    now = kw.pop("now", int(time.time()))
    if recipient is None:
        return f"/v1/{signer.sign_shared('demo', now=now, **kw)}/img/{name}"
    return f"/v1/{signer.sign('demo', recipient, now=now, **kw)}/img/{name}"


def profile(index: int) -> dict[str, object]:
    rows = dict(demo_rows(index))
    return orjson.loads(rows[recipient_id(index)])  # type: ignore[no-any-return]


def greeting_box(image: Image.Image) -> Image.Image:
    return image.convert("RGB").crop((32, 30, 392, 90))


@pytest.mark.parametrize(
    ("name", "fmt", "size"),
    [
        ("banner.png", "PNG", (600, 200)),
        ("banner.jpg", "JPEG", (600, 200)),
        ("banner.gif", "GIF", (600, 200)),
        ("banner@2x.png", "PNG", (1200, 400)),
        ("banner@2x.jpg", "JPEG", (1200, 400)),
    ],
)
def test_banner_formats_and_sizes(
    client: TestClient, signer: TokenSigner, name: str, fmt: str, size: tuple[int, int]
) -> None:
    response = client.get(url(signer, name))
    assert response.status_code == 200 and "x-opentime-fallback" not in response.headers
    image = decode(response.content)
    assert (image.format, image.size) == (fmt, size)
    assert response.headers["content-type"] == Image.MIME[fmt]


def test_recipient_text_is_drawn(client: TestClient, signer: TokenSigner) -> None:
    services = client.app_state["services"]
    block = services.campaigns["demo"].images["banner"]
    served = decode(client.get(url(signer, "banner.png", recipient_id(3))).content)
    context = {"profile": profile(3), "now": None, "fetch_class": "direct"}
    reference = decode(render.render(prepare(block, context, "png", 1)))
    assert ImageChops.difference(served.convert("RGB"), reference.convert("RGB")).getbbox() is None
    other = {**profile(3), "first_name": "Zed"}
    different = decode(render.render(prepare(block, {**context, "profile": other}, "png", 1)))
    assert ImageChops.difference(greeting_box(served), greeting_box(different)).getbbox() is not None
    background = decode(block.fallbacks["png", 1])
    assert ImageChops.difference(greeting_box(served), greeting_box(background)).getbbox() is not None


def test_personal_headers_etag_and_304(client: TestClient, signer: TokenSigner) -> None:
    path = url(signer, "banner.png")
    first = client.get(path)
    headers = first.headers
    assert headers["cache-control"] == NO_CACHE
    assert headers["cdn-cache-control"] == headers["surrogate-control"] == "max-age=30, stale-if-error=86400"
    assert headers["surrogate-key"].startswith("r-") and recipient_id(1) not in headers["surrogate-key"]
    etag = headers["etag"]
    assert etag.startswith('"') and not etag.startswith("W/")
    again = client.get(path, headers={"If-None-Match": etag})
    assert again.status_code == 304 and again.content == b"" and again.headers["etag"] == etag
    head = client.head(path)
    assert head.status_code == 200 and head.content == b"" and int(head.headers["content-length"]) > 0


def test_bad_token_gets_a_neutral_pixel(client: TestClient) -> None:
    response = client.get("/v1/not-a-token/img/banner.gif")
    assert response.status_code == 200
    assert response.headers["x-opentime-fallback"] == "token-malformed"
    assert response.headers["cdn-cache-control"] == "max-age=5"
    assert decode(response.content).size == (1, 1)


@pytest.mark.parametrize(("kind", "reason"), [("expired", "token-expired"), ("unknown", "unknown-recipient")])
def test_fallback_image_of_block_size(
    client: TestClient, signer: TokenSigner, kind: str, reason: str
) -> None:
    if kind == "expired":
        path = url(signer, "banner@2x.png", now=int(time.time()) - 1000, ttl_seconds=10)
    else:
        path = url(signer, "banner@2x.png", "cust-9999999")
    response = client.get(path)
    assert response.status_code == 200 and response.headers["x-opentime-fallback"] == reason
    assert decode(response.content).size == (1200, 400)
    assert response.headers["cache-control"] == NO_CACHE and "surrogate-key" not in response.headers


def test_store_down_and_unknown_block(client: TestClient, signer: TokenSigner) -> None:
    services = client.app_state["services"]
    client.portal.call(services.store.close)  # type: ignore[union-attr]
    response = client.get(url(signer, "banner.jpg", recipient_id(7)))
    assert response.headers["x-opentime-fallback"] == "store-error"
    assert decode(response.content).size == (600, 200)
    unknown = client.get(url(signer, "nope.png"))
    assert unknown.status_code == 200 and unknown.headers["x-opentime-fallback"] == "unknown-block"


@pytest.mark.parametrize(
    "path", ["/v1/x/img/banner", "/v1/x/img/banner.bmp", "/v1/x/img/a/b.png", "/v1/x/img/"]
)
def test_non_image_urls_are_404(client: TestClient, path: str) -> None:
    assert client.get(path).status_code == 404


def test_post_is_405(client: TestClient, signer: TokenSigner) -> None:
    assert client.post(url(signer, "banner.png")).status_code == 405


SHARED = """
[blocks.banner]
kind = "image"
width = 200
height = 60
cache_ttl_seconds = 45
[[blocks.banner.layers]]
type = "text"
text = "{{ 'proxy' if fetch_class != 'direct' else 'you' }}"
"""


@pytest.fixture
def shared_client(tmp_path: Path, settings: Settings) -> Iterator[TestClient]:
    write_campaign(tmp_path / "templates", SHARED, name="demo")
    app = create_app(settings.replace(templates_dir=tmp_path / "templates"))
    with TestClient(app, base_url=BASE_URL) as test_client:
        yield test_client


def test_shared_token_cacheable_until_ttl_and_fetch_class_in_text(
    shared_client: TestClient, signer: TokenSigner
) -> None:
    direct = shared_client.get(
        url(signer, "banner.png", None), headers={"User-Agent": "Mozilla/5.0 (X11) Chrome/126"}
    )
    assert "x-opentime-fallback" not in direct.headers
    assert direct.headers["cdn-cache-control"] == "max-age=45, stale-if-error=86400"
    assert direct.headers["surrogate-key"] == "c-demo"
    gmail = shared_client.get(url(signer, "banner.png", None), headers={"User-Agent": "GoogleImageProxy"})
    assert gmail.content != direct.content
    content = shared_client.app_state["services"].images
    assert content.fetch_counts["gmail-proxy"] == 1 and content.fetch_counts["direct"] == 1


def text_rows(image: Image.Image, box: tuple[int, int, int, int]) -> int:
    """How many pixel rows of ``box`` hold more than the background colour: drawn text."""
    crop = image.convert("RGB").crop(box)
    rows = (crop.crop((0, y, crop.width, y + 1)) for y in range(crop.height))
    return sum(1 for row in rows if len(row.getcolors() or ()) > 1)


def test_missing_data_degrades_one_layer_not_the_banner(client: TestClient, signer: TokenSigner) -> None:
    """A recipient without loyalty points keeps the greeting; the points line draws its default."""
    services = client.app_state["services"]
    row = {"first_name": "Noor", "recommendations": [{"image": "sku-0002.jpg", "name": "x", "sku": "s"}]}
    client.portal.call(services.store.profiles.upsert_many, [("no-points", orjson.dumps(row))])
    response = client.get(url(signer, "banner.png", "no-points"))
    assert response.status_code == 200 and "x-opentime-fallback" not in response.headers
    served = decode(response.content)
    block = services.campaigns["demo"].images["banner"]
    spec = prepare(block, {"profile": row, "now": None, "fetch_class": "direct"}, "png", 1)
    assert [(f.layer, f.problem, f.drawn) for f in spec.fell_back] == [(1, "missing 'loyalty'", "default")]
    reference = decode(render.render(spec))
    assert ImageChops.difference(served.convert("RGB"), reference.convert("RGB")).getbbox() is None
    assert text_rows(served, (32, 30, 392, 90)) > 20  # "Hi Noor," is drawn
    assert text_rows(served, (32, 100, 392, 172)) > 20  # the points line's default is drawn


@pytest.mark.parametrize("bad", ["expired", "forged"])
def test_expired_or_forged_personal_image_gets_the_designed_fallback(
    client: TestClient, signer: TokenSigner, bad: str
) -> None:
    """Never a one-colour box: the block drawn with no recipient ("Hi there," and its defaults)."""
    if bad == "expired":
        path = url(signer, "banner.png", now=int(time.time()) - 500 * 86400, ttl_seconds=86400)
    else:
        path = url(signer, "banner.png")
        cut = path.index("/img/") - 2
        forged = "AB" if path[cut : cut + 2] != "AB" else "BA"  # a forged MAC
        path = path[:cut] + forged + "/img/banner.png"
    response = client.get(path)
    assert response.status_code == 200 and response.headers["x-opentime-fallback"].startswith("token-")
    image = decode(response.content)
    block = client.app_state["services"].campaigns["demo"].images["banner"]
    assert response.content == block.fallbacks["png", 1]
    assert len(image.convert("RGB").getcolors(maxcolors=100_000) or []) > 50  # text and a picture, not a box
    assert text_rows(image, (32, 30, 392, 90)) > 20 and text_rows(image, (32, 100, 392, 172)) > 20
    reference = decode(render.render(prepare(block, {"profile": {}}, "png", 1)))
    assert ImageChops.difference(image.convert("RGB"), reference.convert("RGB")).getbbox() is None


def renders_after(settings: Settings, signer: TokenSigner, names: list[int]) -> float:
    """Banner renders after opening the demo banner of recipients ``names``, in that order."""
    with TestClient(create_app(settings), base_url=BASE_URL) as test_client:
        for index in names:
            response = test_client.get(url(signer, "banner.png", recipient_id(index)))
            assert response.status_code == 200 and "x-opentime-fallback" not in response.headers
        return sample(test_client.get("/metrics").text, "opentime_image_renders_total")


def test_the_image_cache_holds_what_image_cache_max_bytes_allows(
    settings: Settings, signer: TokenSigner
) -> None:
    opens = [1, 2, 1]  # recipient 1 again after recipient 2's banner
    assert renders_after(settings, signer, opens) == 2  # the default keeps both banners
    # Room for one banner (~20-30 KB): recipient 2's render evicts recipient 1's, drawn again.
    assert renders_after(settings.replace(image_cache_max_bytes=40_000), signer, opens) == 3
