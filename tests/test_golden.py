"""Golden files: the exact parts every shipped campaign renders for a fixed recipient, key and time.

A template change shows up here as a readable diff. After an intended change, regenerate with
``python3 -m pytest tests/test_golden.py --update-golden`` and review the diff of tests/golden/.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime
from pathlib import Path

import pytest

from app.campaigns.loader import load_campaigns
from app.campaigns.sendtime import SendTime
from app.config import PROJECT_ROOT
from app.demo import demo_profile
from app.render.templates import Templates
from app.security.keyring import Key, KeyRing
from app.security.tokens import TokenSigner

GOLDEN = Path(__file__).with_name("golden")
FIXED_NOW = 1_900_000_000.0  # 2030-03-17, so tokens and dates never change
CAMPAIGNS = load_campaigns(
    PROJECT_ROOT / "amp_templates",
    PROJECT_ROOT / "static",
    default_budget_ms=150,
    public_base_url="https://amp.example.com",
)
PARTS = {"subject": "subject.txt", "text": "email.txt", "amp": "email.amp.html", "html": "email.html"}


def fixed_sendtime() -> SendTime:
    key = Key(kid="0a1b2c", created=datetime(2030, 1, 1, tzinfo=UTC), secret=bytes(range(32)))
    signer = TokenSigner(KeyRing([key]))
    templates = Templates(PROJECT_ROOT / "amp_templates")
    return SendTime(templates, CAMPAIGNS, signer, "https://amp.example.com", lambda: FIXED_NOW)


def profile() -> dict[str, object]:
    data = demo_profile(random.Random(42))
    data["cart"] = {"items": data["recommendations"][:2]}  # type: ignore[index]
    data["preferences"] = {"topics": ["hiking"], "frequency": "weekly"}
    return data


@pytest.mark.parametrize("campaign", sorted(n for n, c in CAMPAIGNS.items() if c.has_email))
def test_rendered_parts_match_golden_files(campaign: str, request: pytest.FixtureRequest) -> None:
    parts = fixed_sendtime().render(campaign, "cust-0000042", profile())
    folder = GOLDEN / campaign
    for attribute, name in PARTS.items():
        rendered = getattr(parts, attribute) + ("\n" if attribute == "subject" else "")
        path = folder / name
        if request.config.getoption("--update-golden"):
            folder.mkdir(parents=True, exist_ok=True)
            path.write_text(rendered, encoding="utf-8")
        assert path.is_file(), f"missing {path}: run pytest tests/test_golden.py --update-golden"
        assert rendered == path.read_text(encoding="utf-8"), f"{campaign} {name} differs from {path}"
