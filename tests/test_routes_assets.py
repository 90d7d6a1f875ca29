"""``GET /static/<image>``: the pictures campaigns link to, served by Opentime itself."""

from __future__ import annotations

import io
from pathlib import Path

import orjson
import pytest
from PIL import Image
from starlette.testclient import TestClient

from app.config import PROJECT_ROOT
from app.demo import PRODUCTS
from app.routes.assets import find_image

PRODUCTS_DIR = PROJECT_ROOT / "static" / "demo" / "products"


def test_a_demo_product_picture_is_a_real_image_any_cache_may_keep(client: TestClient) -> None:
    response = client.get("/static/demo/products/sku-0001.jpg")
    assert response.status_code == 200
    assert response.headers["content-type"] == "image/jpeg"
    assert response.headers["cache-control"] == "public, max-age=86400"
    picture = Image.open(io.BytesIO(response.content))
    assert (picture.format, picture.size) == ("JPEG", (240, 240))
    # Not a blank square: the product's name is drawn in white on a coloured ground.
    colours = picture.convert("RGB").getcolors(maxcolors=240 * 240) or []
    assert len(colours) > 10 and max(colours)[1] != (255, 255, 255)
    head = client.head("/static/demo/products/sku-0001.jpg")
    assert head.status_code == 200 and head.content == b""


@pytest.mark.parametrize(
    "path",
    [
        "/static/demo/picks.json",  # only pictures
        "/static/fonts/DejaVuSans.ttf",
        "/static/demo/products/nope.jpg",
        "/static/%2e%2e/pyproject.toml",
        "/static/demo/products/..%2f..%2f..%2fREADME.md",
        "/static/",
    ],
)
def test_anything_else_is_not_found(client: TestClient, path: str) -> None:
    response = client.get(path)
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/json"


def test_a_symlink_out_of_the_static_folder_is_not_followed(tmp_path: Path) -> None:
    # Attack: a picture name that is a link to a file elsewhere on the machine.
    outside = tmp_path / "secret.png"
    outside.write_bytes(b"\x89PNG")
    static = tmp_path / "static"
    static.mkdir()
    (static / "inside.png").write_bytes(b"\x89PNG")
    (static / "link.png").symlink_to(outside)
    assert find_image(static, "inside.png") == (static / "inside.png").resolve()
    assert find_image(static, "link.png") is None
    assert find_image(static, "../secret.png") is None


def test_every_picture_the_demo_names_is_shipped_and_small() -> None:
    fallback = orjson.loads((PROJECT_ROOT / "static" / "demo" / "picks.json").read_bytes())["items"]
    names = [f"sku-{i:04d}.jpg" for i in range(len(PRODUCTS))] + [item["image"] for item in fallback]
    for name in names:
        path = PRODUCTS_DIR / name
        assert path.is_file(), name
        assert 1_000 < path.stat().st_size < 10_000, name
        with Image.open(path) as picture:
            assert picture.size == (240, 240)
