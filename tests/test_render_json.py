from __future__ import annotations

from typing import Any

import orjson
import pytest

from app.campaigns.loader import ItemField, ListBlock
from app.render.json import render_list


def field(name: str, kind: Any = "text", **kw: Any) -> ItemField:
    defaults: dict[str, Any] = {
        "path": (name,),
        "required": True,
        "default": None,
        "max_length": 200,
        "base": None,
    }
    defaults.update(kw)
    return ItemField(name=name, type=kind, **defaults)


BLOCK = ListBlock(
    name="picks",
    source=("recs",),
    fields=(
        field("name", max_length=10),
        field("price", "number", required=False),
        field("url", "url", path=("sku",), base="https://shop.example.com/p/"),
    ),
    max_items=2,
    budget_s=0.1,
    cache_ttl_s=None,
    fallback_body=b"{}",
)


def items(attributes: dict[str, Any], block: ListBlock = BLOCK) -> Any:
    body = render_list(block, attributes)
    return None if body is None else orjson.loads(body)["items"]


def test_items_are_shaped_with_absolute_urls_and_capped() -> None:
    recs = [
        {"name": "Shoes", "price": 10, "sku": "a1"},
        {"name": "Socks", "sku": "b2"},
        {"name": "Cap", "sku": "c"},
    ]
    assert items({"recs": recs}) == [
        {"name": "Shoes", "price": 10, "url": "https://shop.example.com/p/a1"},
        {"name": "Socks", "url": "https://shop.example.com/p/b2"},
    ]


def test_items_with_unsafe_or_missing_required_fields_are_dropped() -> None:
    recs = [
        {"name": "Evil", "sku": "javascript:alert(1)"},
        {"name": "Plain", "sku": "http://insecure.example/x"},
        {"sku": "no-name"},
        "not an object",
        {"name": "Good", "sku": "https://other.example/full", "price": True},
    ]
    assert items({"recs": recs}) == [{"name": "Good", "url": "https://other.example/full"}]


def test_long_text_is_truncated_and_html_is_left_to_mustache_escaping() -> None:
    (item,) = items({"recs": [{"name": "<b>Extraordinary</b>", "sku": "x"}]})
    assert item["name"] == "<b>Extrao…"
    assert len(item["name"]) == 10


def test_no_usable_data_is_none() -> None:
    assert items({}) is None
    assert items({"recs": []}) is None
    assert items({"recs": "text"}) is None
    assert items({"recs": [{"name": "x"}]}) is None


def test_object_source_is_a_single_item_with_defaults() -> None:
    block = ListBlock(
        name="hello",
        source=(),
        max_items=1,
        budget_s=0.1,
        cache_ttl_s=None,
        fallback_body=b"{}",
        fields=(
            field("first_name", required=False, default="there"),
            field("points", "integer", path=("l", "p")),
        ),
    )
    assert items({"l": {"p": 12.7}}, block) == [{"first_name": "there", "points": 12}]
    assert items({"first_name": "Ada", "l": {"p": float("nan")}}, block) is None


def test_untrusted_url_characters_are_percent_encoded() -> None:
    recs = [{"name": "x", "sku": "a b<script>\"'{{x}}é"}]
    (item,) = items({"recs": recs})
    assert item["url"] == "https://shop.example.com/p/a%20b%3Cscript%3E%22%27%7B%7Bx%7D%7D%C3%A9"


@pytest.mark.parametrize(
    "value",
    [
        "sku-1",
        "a.b_c~d",
        "https://cdn.example.com/x/y.jpg",
        "https://h.example:8443/p%20q",
        "../up",
        "/root",
        "x y",
        "https://h.example/a b",
        "http://h.example/",
        "javascript:alert(1)",
        " sku-2 ",
        "a:b",
        "?q=1",
    ],
)
def test_url_fast_paths_agree_with_the_general_path(value: str) -> None:
    from app.render import json as render_json

    base = "https://shop.example.com/p/"
    general = render_json._url_general(value, base)
    assert render_json._url(value, base) == general


def test_url_that_urllib_cannot_parse_drops_the_item_instead_of_raising() -> None:
    # Attack: one profile with "https://[x/y" (an invalid IPv6 host) used to raise inside the store's
    # batch callback and leave every recipient of that batch waiting until the process restarted.
    recs = [{"name": "Bad", "sku": "https://[x/y"}, {"name": "Good", "sku": "g"}]
    assert items({"recs": recs}) == [{"name": "Good", "url": "https://shop.example.com/p/g"}]


def formatted_block() -> ListBlock:
    from app.render.formats import Zones, parse_format, parse_zone

    return ListBlock(
        name="offers",
        source=("offers",),
        fields=(
            field("name"),
            field("price", "number", required=False, format=parse_format("currency:USD")),
            field("ends", "datetime", required=False, format=parse_format("date")),
            field("seen", "datetime", required=False, format=parse_format("iso")),
        ),
        max_items=5,
        budget_s=0.1,
        cache_ttl_s=None,
        fallback_body=b"{}",
        zones=Zones(parse_zone("America/New_York"), ("zone",)),
    )


def test_formatted_fields_carry_the_text_a_reader_sees() -> None:
    offers = [
        {"name": "Free", "price": 0, "ends": "2027-12-31T23:30:00Z", "seen": 1_900_000_000},
        {"name": "Socks", "price": 19.5, "ends": "soon"},  # an unreadable date is left out
        {"name": "Tent", "price": "12", "ends": "2027-12-31"},  # a text price is not a number
    ]
    assert items({"offers": offers}, formatted_block()) == [
        {"name": "Free", "price": "$0.00", "ends": "December 31, 2027", "seen": "2030-03-17T17:46:40Z"},
        {"name": "Socks", "price": "$19.50"},
        {"name": "Tent", "ends": "December 31, 2027"},
    ]
    # The recipient's own zone wins over the campaign's; a bad one is ignored.
    assert (
        items({"offers": offers[:1], "zone": "Asia/Tokyo"}, formatted_block())[0]["ends"] == "January 1, 2028"
    )
    assert (
        items({"offers": offers[:1], "zone": "Nowhere"}, formatted_block())[0]["ends"] == "December 31, 2027"
    )


def test_http_urls_only_on_the_servers_own_origin() -> None:
    # With public_base_url on http://127.0.0.1 (the local demo), a path base is on that origin: its
    # URLs are the server's own; any other http URL is still refused.
    from app.render import json as render_json

    base = "http://127.0.0.1:8000/static/demo/products/"
    assert render_json._url("sku-1.jpg", base) == f"{base}sku-1.jpg"
    assert render_json._url("http://127.0.0.1:8000/other.jpg", base) == "http://127.0.0.1:8000/other.jpg"
    assert render_json._url("https://cdn.example/x.jpg", base) == "https://cdn.example/x.jpg"
    for refused in ("http://evil.example/x.jpg", "http://127.0.0.1:9000/x.jpg", "javascript:alert(1)"):
        assert render_json._url(refused, base) is render_json.MISSING
    for value in ("sku-1.jpg", "a b.jpg", "../up.jpg", "/root.jpg"):
        assert render_json._url(value, base) == render_json._url_general(value, base)


def test_remembered_urls_are_the_same_urls_and_the_memory_stays_bounded() -> None:
    from app.render import json as render_json

    block = ListBlock(
        name="many",
        source=("recs",),
        fields=(field("url", "url", path=("sku",), base="https://shop.example.com/p/"),),
        max_items=render_json.URL_MEMO_SIZE + 20,
        budget_s=0.1,
        cache_ttl_s=None,
        fallback_body=b"{}",
    )
    recs = [{"sku": f"s{i}"} for i in range(render_json.URL_MEMO_SIZE + 10)]
    recs += [{"sku": "javascript:alert(1)"}, {"sku": "a b"}, {"sku": 7}]
    expected = [{"url": f"https://shop.example.com/p/s{i}"} for i in range(render_json.URL_MEMO_SIZE + 10)]
    expected.append({"url": "https://shop.example.com/p/a%20b"})
    for _ in range(2):  # the first pass fills (and once clears) the memory, the second reads from it
        assert items({"recs": recs}, block) == expected
    memory = block.shape.__globals__["c0"].__closure__  # the url field's coercer and its remembered URLs
    assert memory is not None
    sizes = [len(cell.cell_contents) for cell in memory if isinstance(cell.cell_contents, dict)]
    assert sizes and max(sizes) <= render_json.URL_MEMO_SIZE
