"""``opentime check-config`` counts every block kind a campaign can declare."""

from __future__ import annotations

import re
import shutil
import typing
from collections.abc import Mapping
from dataclasses import fields
from pathlib import Path

import pytest
from click.testing import CliRunner

from app.campaigns.loader import Campaign, load_campaign
from app.cli.check_config import BLOCK_KINDS, describe
from app.cli.main import main
from app.config import PROJECT_ROOT
from app.errors import CampaignError

STATIC = PROJECT_ROOT / "static"


def block_fields() -> set[str]:
    """Campaign's fields that hold blocks: its Mapping fields."""
    hints = typing.get_type_hints(Campaign)
    return {f.name for f in fields(Campaign) if typing.get_origin(hints[f.name]) is Mapping}


def test_block_kinds_cover_every_kind_the_loader_accepts(tmp_path: Path) -> None:
    assert {field for _, field in BLOCK_KINDS} == block_fields()
    folder = tmp_path / "probe"
    folder.mkdir()
    (folder / "blocks.toml").write_text('[blocks.x]\nkind = "no-such-kind"\n')
    with pytest.raises(CampaignError) as raised:
        load_campaign(folder, STATIC, default_budget_ms=150, public_base_url="https://amp.example.com")
    supported = re.search(r"supported: ([a-z, ]+)\)", str(raised.value))
    assert supported and set(supported.group(1).split(", ")) == {kind for kind, _ in BLOCK_KINDS}


def every_kind(root: Path) -> Path:
    """The demo campaign (lists, a fragment, an image, a countdown) plus cart-recovery's form block,
    and a campaign of one list block without email templates."""
    templates = root / "amp_templates"
    shutil.copytree(PROJECT_ROOT / "amp_templates" / "demo", templates / "everything")
    form = (PROJECT_ROOT / "amp_templates" / "cart-recovery" / "blocks.toml").read_text()
    blocks = templates / "everything" / "blocks.toml"
    blocks.write_text(blocks.read_text() + "\n" + form[form.index("[blocks.feedback]") :])
    (templates / "bare").mkdir()
    (templates / "bare" / "blocks.toml").write_text(
        '[blocks.hello]\nkind = "list"\nsource = "."\nfallback = "demo/hello.json"\n'
        '[blocks.hello.fields]\nfirst_name = { type = "text", required = false }\n'
    )
    return templates


def test_check_config_counts_every_block_kind(tmp_path: Path, keys_file: Path) -> None:
    env = {
        "OPENTIME_PUBLIC_BASE_URL": "https://amp.example.com",
        "OPENTIME_KEYS_FILE": str(keys_file),
        "OPENTIME_ALLOWED_SENDERS": "news@example.com",
        "OPENTIME_TEMPLATES_DIR": str(every_kind(tmp_path)),
    }
    result = CliRunner().invoke(main, ["check-config"], env=env, catch_exceptions=False)
    assert result.exit_code == 0, result.stderr
    lines = result.stdout.splitlines()
    start = lines.index("campaigns: 2")
    assert lines[start + 1 :] == [
        "  bare: 1 block (1 list), no email templates",
        "  everything: 5 blocks (2 lists, 1 image, 1 countdown, 1 form), 1 fragment, email + web view",
    ]


def test_describe_counts_each_field_it_names(tmp_path: Path) -> None:
    campaign = load_campaign(
        every_kind(tmp_path) / "everything",
        STATIC,
        default_budget_ms=150,
        public_base_url="https://amp.example.com",
    )
    counted = {kind: len(getattr(campaign, field)) for kind, field in BLOCK_KINDS}
    assert counted == {"list": 2, "image": 1, "countdown": 1, "form": 1}
    empty = Campaign(name="empty", title="Empty", lists={})
    assert describe(empty) == "empty: 0 blocks, no email templates"
