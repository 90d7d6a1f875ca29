from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from app.campaigns.loader import load_campaign, load_campaigns
from app.config import PROJECT_ROOT
from app.errors import CampaignError

PICKS_FIELDS = """
[blocks.picks.fields]
name = { type = "text" }
url = { from = "sku", type = "url", base = "https://shop.example.com/p/" }
"""


def make_campaign(tmp_path: Path, blocks: str, fallback: object = None) -> tuple[Path, Path]:
    folder = tmp_path / "amp" / "spring"
    folder.mkdir(parents=True)
    (folder / "blocks.toml").write_text(blocks)
    static = tmp_path / "static"
    static.mkdir()
    body = (
        fallback if fallback is not None else {"items": [{"name": "x", "url": "https://shop.example.com/"}]}
    )
    (static / "fb.json").write_bytes(orjson.dumps(body))
    return folder, static


def block(extra: str = "", fields: str = PICKS_FIELDS) -> str:
    return f'[blocks.picks]\nkind = "list"\nsource = "recs"\nfallback = "fb.json"\n{extra}\n{fields}'


def test_shipped_campaigns_load() -> None:
    campaigns = load_campaigns(
        PROJECT_ROOT / "amp_templates",
        PROJECT_ROOT / "static",
        default_budget_ms=150,
        public_base_url="https://amp.example.com",
    )
    demo = campaigns["demo"]
    assert set(demo.lists) >= {"hello", "picks"}
    assert demo.lists["picks"].max_items == 4
    assert orjson.loads(demo.lists["picks"].fallback_body)["items"]


def test_block_defaults_and_budget(tmp_path: Path) -> None:
    folder, static = make_campaign(tmp_path, block())
    picks = load_campaign(
        folder, static, default_budget_ms=120, public_base_url="https://amp.example.com"
    ).lists["picks"]
    assert (picks.budget_s, picks.max_items, picks.cache_ttl_s, picks.source) == (0.12, 10, None, ("recs",))
    url = next(f for f in picks.fields if f.name == "url")
    assert (url.path, url.type, url.required) == (("sku",), "url", True)


@pytest.mark.parametrize(
    ("blocks", "message"),
    [
        (block().replace('"list"', '"carousel"'), "unknown kind 'carousel'"),
        (block('colour = "red"'), "unknown key"),
        (block("max_items = 0"), "max_items"),
        (block("budget_ms = 99999"), "budget_ms"),
        (block().replace('"fb.json"', '"../../etc/passwd"'), "outside the static folder"),
        (block().replace('"fb.json"', '"missing.json"'), "fallback"),
        (block(fields="[blocks.picks.fields]\n"), "at least one field"),
        (block(fields='[blocks.picks.fields]\nx = { type = "colour" }'), "type must be one of"),
        (block(fields='[blocks.picks.fields]\nx = { from = ".", required = false }'), "not '.'"),
        (block(fields='[blocks.picks.fields]\nx = { type = "url", base = "http://a.example" }'), "https"),
        (
            block(fields='[blocks.picks.fields]\nx = { type = "text", base = "https://a.example" }'),
            "only valid",
        ),
        ("[blocks.BAD]\nkind = 'list'", "block names"),
        ("[blocks", "blocks.toml"),
    ],
)
def test_invalid_definitions_name_file_and_block(tmp_path: Path, blocks: str, message: str) -> None:
    folder, static = make_campaign(tmp_path, blocks)
    with pytest.raises(CampaignError, match=message) as info:
        load_campaign(folder, static, default_budget_ms=150, public_base_url="https://amp.example.com")
    assert "blocks.toml" in str(info.value)


@pytest.mark.parametrize(
    "fallback",
    [
        {"items": [{"url": "javascript:alert(1)"}]},
        {"items": "nope"},
        [1, 2],
        {"items": [{"url": "http://insecure.example/x"}]},
        {"items": [{"url": 42}]},
    ],
)
def test_fallback_must_be_items_with_complete_https_urls(tmp_path: Path, fallback: object) -> None:
    folder, static = make_campaign(tmp_path, block(), fallback)
    with pytest.raises(CampaignError, match="fallback"):
        load_campaign(folder, static, default_budget_ms=150, public_base_url="https://amp.example.com")


def test_fallback_urls_follow_the_fields_rules(tmp_path: Path) -> None:
    # Like live items: a relative value is joined to the field's base (here a path on this server).
    fields = PICKS_FIELDS + 'image = { type = "url", base = "/static/spring/", required = false }\n'
    fallback = {"items": [{"name": "x", "url": "/sale", "image": "sale.jpg"}]}
    folder, static = make_campaign(tmp_path, block(fields=fields), fallback)
    picks = load_campaign(folder, static, default_budget_ms=150, public_base_url="https://cdn.example/ot/")
    (item,) = orjson.loads(picks.lists["picks"].fallback_body)["items"]
    assert item == {
        "name": "x",
        "url": "https://shop.example.com/sale",
        "image": "https://cdn.example/ot/static/spring/sale.jpg",
    }


def test_missing_templates_folder() -> None:
    with pytest.raises(CampaignError, match="does not exist"):
        load_campaigns(
            Path("/nonexistent"),
            Path("/nonexistent"),
            default_budget_ms=150,
            public_base_url="https://amp.example.com",
        )


FORMATTED_FIELDS = """
[blocks.picks.fields]
name = { type = "text" }
url = { from = "sku", type = "url", base = "https://shop.example.com/p/" }
price = { type = "number", format = "currency:EUR", required = false }
qty = { type = "integer", format = "number", default = 1000, required = false }
ends = { type = "datetime", format = "date", required = false }
seen = { type = "datetime", required = false }
image = { type = "url", base = "/static/spring/", required = false }
gift = { type = "number", format = "currency:USD", default = "Free", required = false }
"""


def test_formats_zones_and_path_bases(tmp_path: Path) -> None:
    zone = '[campaign]\nzone = "Europe/Berlin"\nzone_field = "prefs.zone"\n'
    fallback = {
        "items": [{"name": "x", "url": "/", "price": 5, "ends": "2027-12-31T23:30:00Z", "image": "a.png"}]
    }
    folder, static = make_campaign(tmp_path, zone + block(fields=FORMATTED_FIELDS), fallback)
    campaign = load_campaign(folder, static, default_budget_ms=150, public_base_url="https://ot.example/")
    picks = campaign.lists["picks"]
    by_name = {f.name: f for f in picks.fields}
    assert by_name["price"].format is not None and by_name["price"].format.spec == "currency:EUR"
    assert by_name["seen"].format is not None and by_name["seen"].format.spec == "iso"  # the default
    assert by_name["qty"].default == "1,000"  # a default shows formatted, like any value
    assert by_name["price"].default is None
    assert by_name["gift"].default == "Free"  # text is already what a reader sees
    assert by_name["image"].base == "https://ot.example/static/spring/"
    assert campaign.zones.path == ("prefs", "zone") and picks.zones is campaign.zones and picks.dated
    # The fallback reads like live data: formatted in the campaign's zone, URLs completed.
    (item,) = orjson.loads(picks.fallback_body)["items"]
    assert item == {
        "name": "x",
        "url": "https://shop.example.com/",
        "price": "€5.00",
        "ends": "January 1, 2028",
        "image": "https://ot.example/static/spring/a.png",
    }


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ('price = { type = "number", format = "currency:usd" }', "fields.price: .*ISO 4217"),
        ('price = { type = "number", format = "money" }', "fields.price: unknown format 'money'"),
        ('price = { type = "number", format = 2 }', "fields.price: a format must be a string"),
        ('title = { type = "text", format = "number" }', "fields.title: format 'number' needs type = number"),
        ('ends = { type = "number", format = "date" }', "fields.ends: format 'date' needs type = datetime"),
        (
            'qty = { type = "integer", format = "number", default = true }',
            "fields.qty: default True does not fit",
        ),
        ('image = { type = "url", base = "//cdn.example/" }', "fields.image: base must be"),
    ],
)
def test_format_mistakes_name_campaign_block_and_field(tmp_path: Path, fields: str, message: str) -> None:
    folder, static = make_campaign(tmp_path, block(fields=PICKS_FIELDS + fields))
    with pytest.raises(CampaignError, match=message) as info:
        load_campaign(folder, static, default_budget_ms=150, public_base_url="https://amp.example.com")
    assert "spring/blocks.toml [blocks.picks]" in str(info.value)


@pytest.mark.parametrize(
    ("campaign", "message"),
    [
        ('zone = "Mars/Base"', r"\[campaign\] zone: unknown time zone 'Mars/Base'"),
        ("zone = 3", r"\[campaign\] zone: unknown time zone 3"),
        ('zone_field = ""', r"\[campaign\] zone_field"),
    ],
)
def test_zone_mistakes_name_the_campaign(tmp_path: Path, campaign: str, message: str) -> None:
    folder, static = make_campaign(tmp_path, f"[campaign]\n{campaign}\n" + block())
    with pytest.raises(CampaignError, match=message) as info:
        load_campaign(folder, static, default_budget_ms=150, public_base_url="https://amp.example.com")
    assert "spring/blocks.toml" in str(info.value)


def test_fallback_values_a_format_cannot_read_are_refused(tmp_path: Path) -> None:
    fields = PICKS_FIELDS + 'price = { type = "number", format = "currency:USD" }\n'
    fallback = {"items": [{"name": "x", "url": "https://shop.example.com/", "price": True}]}
    folder, static = make_campaign(tmp_path, block(fields=fields), fallback)
    with pytest.raises(CampaignError, match="fallback item 0 price does not fit type = number"):
        load_campaign(folder, static, default_budget_ms=150, public_base_url="https://amp.example.com")


def test_every_shipped_email_campaign_declares_its_sender() -> None:
    campaigns = load_campaigns(
        PROJECT_ROOT / "amp_templates",
        PROJECT_ROOT / "static",
        default_budget_ms=150,
        public_base_url="https://amp.example.com",
    )
    senders = {name: str(c.sender) for name, c in campaigns.items() if c.has_email}
    assert senders and all(sender.endswith("<news@example.com>") for sender in senders.values()), senders


def test_campaign_from_is_checked_and_idna_encoded(tmp_path: Path) -> None:
    folder, static = make_campaign(tmp_path, '[campaign]\nfrom = "Bücher <news@Bücher.example>"\n' + block())
    sender = load_campaign(
        folder, static, default_budget_ms=150, public_base_url="https://amp.example.com"
    ).sender
    assert str(sender) == "Bücher <news@xn--bcher-kva.example>"


@pytest.mark.parametrize(
    ("value", "message"),
    [('"zoë@example.com"', "not ASCII"), ('"a@b.org, c@d.org"', "more than one address"), ("1", "string")],
)
def test_invalid_campaign_from_names_the_file(tmp_path: Path, value: str, message: str) -> None:
    folder, static = make_campaign(tmp_path, f"[campaign]\nfrom = {value}\n" + block())
    with pytest.raises(CampaignError, match=message) as info:
        load_campaign(folder, static, default_budget_ms=150, public_base_url="https://amp.example.com")
    assert "blocks.toml [campaign]" in str(info.value)
