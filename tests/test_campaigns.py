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
    campaigns = load_campaigns(PROJECT_ROOT / "amp_templates", PROJECT_ROOT / "static", default_budget_ms=150)
    demo = campaigns["demo"]
    assert set(demo.lists) >= {"hello", "picks"}
    assert demo.lists["picks"].max_items == 4
    assert orjson.loads(demo.lists["picks"].fallback_body)["items"]


def test_block_defaults_and_budget(tmp_path: Path) -> None:
    folder, static = make_campaign(tmp_path, block())
    picks = load_campaign(folder, static, default_budget_ms=120).lists["picks"]
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
        load_campaign(folder, static, default_budget_ms=150)
    assert "blocks.toml" in str(info.value)


@pytest.mark.parametrize(
    "fallback",
    [
        {"items": [{"url": "javascript:alert(1)"}]},
        {"items": "nope"},
        [1, 2],
        {"items": [{"url": "/relative"}]},
    ],
)
def test_fallback_must_be_items_with_absolute_https_urls(tmp_path: Path, fallback: object) -> None:
    folder, static = make_campaign(tmp_path, block(), fallback)
    with pytest.raises(CampaignError, match="fallback"):
        load_campaign(folder, static, default_budget_ms=150)


def test_missing_templates_folder() -> None:
    with pytest.raises(CampaignError, match="does not exist"):
        load_campaigns(Path("/nonexistent"), Path("/nonexistent"), default_budget_ms=150)


def test_every_shipped_email_campaign_declares_its_sender() -> None:
    campaigns = load_campaigns(PROJECT_ROOT / "amp_templates", PROJECT_ROOT / "static", default_budget_ms=150)
    senders = {name: str(c.sender) for name, c in campaigns.items() if c.has_email}
    assert senders and all(sender.endswith("<news@example.com>") for sender in senders.values()), senders


def test_campaign_from_is_checked_and_idna_encoded(tmp_path: Path) -> None:
    folder, static = make_campaign(tmp_path, '[campaign]\nfrom = "Bücher <news@Bücher.example>"\n' + block())
    sender = load_campaign(folder, static, default_budget_ms=150).sender
    assert str(sender) == "Bücher <news@xn--bcher-kva.example>"


@pytest.mark.parametrize(
    ("value", "message"),
    [('"zoë@example.com"', "not ASCII"), ('"a@b.org, c@d.org"', "more than one address"), ("1", "string")],
)
def test_invalid_campaign_from_names_the_file(tmp_path: Path, value: str, message: str) -> None:
    folder, static = make_campaign(tmp_path, f"[campaign]\nfrom = {value}\n" + block())
    with pytest.raises(CampaignError, match=message) as info:
        load_campaign(folder, static, default_budget_ms=150)
    assert "blocks.toml [campaign]" in str(info.value)
