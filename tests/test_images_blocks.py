"""``image`` blocks in blocks.toml: validation names file and block; fallbacks, caps, picture paths."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.errors import CampaignError
from app.images import render
from app.images.layout import PictureLayer, picture_path, prepare
from tests.test_images_helpers import GREETING, STATIC, campaign, decode


def test_greeting_block_loads_with_prerendered_fallbacks(tmp_path: Path) -> None:
    block = campaign(tmp_path).images["hello"]
    assert (block.width, block.height, block.budget_s) == (300, 100, 0.5)
    assert decode(block.fallbacks["png", 2]).size == (600, 200)
    assert decode(block.fallbacks["gif", 1]).getpixel((5, 5)) is not None
    assert not block.open_dependent


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (("width = 300", "width = 3000"), "width: expected an integer from 1 to 2000"),
        (("width = 300\nheight = 100", "width = 1000\nheight = 1001"), "more than 1000000 pixels"),
        (('color = "#ffffff"', 'color = "white"'), r"layers\[0\] color: expected a colour"),
        (('font = "bold"', 'font = "comic"'), r"layers\[0\] font: expected one of regular, bold"),
        (("x = 10", "x = 10\nfoo = 1"), r"layers\[0\]: unknown key\(s\) foo"),
        (("width = 280", "width = 400"), r"layers\[0\] width: expected an integer from 1 to 290"),
        (("Hi {{", "Hi {%"), r"layers\[0\] text: "),
        (
            ('background = "#102030"', 'background_image = "https://example.com/x.png"'),
            "URLs are never fetched",
        ),
        (('background = "#102030"', 'background_image = "../pyproject.toml"'), "outside the static folder"),
        (('background = "#102030"', 'fallback = "demo/picks.json"'), r"fallback: picture .*picks.json"),
    ],
)
def test_invalid_blocks_name_file_and_block(tmp_path: Path, change: tuple[str, str], message: str) -> None:
    with pytest.raises(CampaignError, match=r"imgs/blocks.toml \[blocks.hello\].*" + message):
        campaign(tmp_path, GREETING.replace(*change))


def test_fallback_file_is_fitted_to_the_block(tmp_path: Path) -> None:
    blocks = GREETING.replace(
        'background = "#102030"', 'fallback = "demo/products/sku-0001.jpg"\nradius = 10'
    )
    block = campaign(tmp_path, blocks).images["hello"]
    png = decode(block.fallbacks["png", 2])
    assert png.size == (600, 200) and png.mode == "RGBA"
    assert png.getpixel((0, 0))[3] == 0  # rounded corner is transparent in PNG


def test_open_context_makes_a_block_open_dependent(tmp_path: Path) -> None:
    blocks = GREETING.replace(
        "Hi {{ profile.first_name | default('there') }}", "{{ now.year }} {{ fetch_class }}"
    )
    assert campaign(tmp_path, blocks).images["hello"].open_dependent


def test_picture_paths_stay_under_their_base() -> None:
    base = (STATIC / "demo" / "products").resolve()
    assert picture_path(base, "sku-0001.jpg") == base / "sku-0001.jpg"
    # A profile value must never make the server read other files or fetch URLs.
    for hostile in (
        "../../fonts/LICENSE",
        "/etc/passwd",
        "https://evil.example/x.png",
        "//evil/x.png",
        "",
        ".",
    ):
        assert picture_path(base, hostile) is None


def test_content_key_depends_on_drawn_values_only(tmp_path: Path) -> None:
    block = campaign(tmp_path).images["hello"]
    ada = prepare(block, {"profile": {"first_name": "Ada", "email": "a@x"}}, "png", 1)
    same = prepare(block, {"profile": {"first_name": "Ada", "email": "b@y"}}, "png", 1)
    assert ada.key == same.key
    assert ada.key != prepare(block, {"profile": {"first_name": "Bo"}}, "png", 1).key
    assert ada.key != prepare(block, {"profile": {"first_name": "Ada"}}, "png", 2).key
    assert ada.key != prepare(block, {"profile": {"first_name": "Ada"}}, "jpg", 1).key


def test_missing_product_picture_leaves_box_empty(tmp_path: Path) -> None:
    blocks = GREETING + (
        '[[blocks.hello.layers]]\ntype = "image"\nsrc = "{{ profile.pic }}"\nbase = "demo/products"\n'
        "x = 200\nwidth = 100\n"
    )
    block = campaign(tmp_path, blocks).images["hello"]
    assert isinstance(block.layers[1], PictureLayer)
    with_pic = decode(render.render(prepare(block, {"profile": {"pic": "sku-0002.jpg"}}, "png", 1)))
    without = decode(render.render(prepare(block, {"profile": {"pic": "missing.jpg"}}, "png", 1)))
    assert with_pic.getpixel((250, 50)) != without.getpixel((250, 50)) == (16, 32, 48)


def test_layer_defaults_and_field_defaults(tmp_path: Path) -> None:
    blocks = GREETING.replace(
        "text = \"Hi {{ profile.first_name | default('there') }}\"",
        "text = \"{{ profile.first_name }}: {{ '{:,}'.format(profile.loyalty.points) }}\"\n"
        'default = "Welcome"',
    )
    block = campaign(tmp_path, blocks).images["hello"]
    full = prepare(block, {"profile": {"first_name": "Ada", "loyalty": {"points": 1200}}}, "png", 1)
    assert (full.values, full.fell_back) == (("Ada: 1,200",), ())
    missing = prepare(block, {"profile": {"first_name": "Ada"}}, "png", 1)
    assert missing.values == ("Welcome",)
    assert [f.describe() for f in missing.fell_back] == [
        "layers[0] \"{{ profile.first_name }}: {{ '{:,}'.format(profile.loyalty.points) }}\": "
        "missing 'loyalty', default"
    ]
    bad = prepare(block, {"profile": {"first_name": "Ada", "loyalty": {"points": "many"}}}, "png", 1)
    assert (bad.values, bad.fell_back[0].problem) == (("Welcome",), "bad value (ValueError)")


def test_field_defaults_fill_gaps_without_overriding_data(tmp_path: Path) -> None:
    blocks = GREETING.replace(
        "budget_ms = 500\n", "budget_ms = 500\ndefaults = { first_name = 'friend', loyalty.points = 0 }\n"
    ).replace(
        "text = \"Hi {{ profile.first_name | default('there') }}\"",
        'text = "{{ profile.first_name }} {{ profile.loyalty.points }} {{ profile.loyalty.tier }}"',
    )
    block = campaign(tmp_path, blocks).images["hello"]
    assert block.defaults == {"first_name": "friend", "loyalty": {"points": 0}}
    spec = prepare(block, {"profile": {"first_name": None, "loyalty": {"tier": "gold"}}}, "png", 1)
    assert (spec.values, spec.fell_back) == (("friend 0 gold",), ())
    left_out = prepare(block, {"profile": {"loyalty": {"points": 5}}}, "png", 1)
    assert left_out.values == (None,) and left_out.fell_back[0].problem == "missing 'tier'"


def test_the_designed_fallback_is_the_block_drawn_without_a_recipient(tmp_path: Path) -> None:
    block = campaign(tmp_path).images["hello"]
    drawn = decode(block.fallbacks["png", 1]).convert("RGB")
    plain = decode(render.plain(300, 100, block.background, "png")).convert("RGB")
    assert drawn.getbbox() and drawn.tobytes() != plain.tobytes()  # "Hi there" is drawn, not a box
    expected = decode(render.render(prepare(block, {"profile": {}}, "png", 1))).convert("RGB")
    assert drawn.tobytes() == expected.tobytes()


@pytest.mark.parametrize(
    ("addition", "message"),
    [
        ("defaults = 3\n", r"defaults: expected a table of profile fields"),
        ("defaults = { when = 1979-05-27 }\n", r"defaults: values must be text, numbers"),
    ],
)
def test_invalid_defaults_are_named(tmp_path: Path, addition: str, message: str) -> None:
    with pytest.raises(CampaignError, match=r"\[blocks.hello\] " + message):
        campaign(tmp_path, GREETING.replace("budget_ms = 500\n", "budget_ms = 500\n" + addition))


def test_a_layer_default_must_be_text(tmp_path: Path) -> None:
    with pytest.raises(CampaignError, match=r"layers\[0\] default: expected text"):
        campaign(tmp_path, GREETING.replace('color = "#ffffff"', 'color = "#ffffff"\ndefault = 3'))
