"""Every shipped campaign renders to an AMP part that the official validator PASSes (AMP4EMAIL)."""

from __future__ import annotations

import random
import time
from typing import Any

import pytest

from app.campaigns.loader import load_campaigns
from app.campaigns.sendtime import SendTime
from app.campaigns.validator import AmpValidator
from app.config import PROJECT_ROOT
from app.demo import demo_profile
from app.render.templates import Templates
from app.security.tokens import TokenSigner

CAMPAIGNS = load_campaigns(
    PROJECT_ROOT / "amp_templates",
    PROJECT_ROOT / "static",
    default_budget_ms=150,
    public_base_url="https://amp.example.com",
)
EMAIL_CAMPAIGNS = sorted(name for name, c in CAMPAIGNS.items() if c.has_email)
HOSTILE = "<script>alert('x')</script>\"' & </template>{{x}} 🎉👩‍👩‍👧 שלום مرحبا \u202e"


def hostile(value: Any) -> Any:
    """The same shape of data with every string replaced by HTML-hostile text."""
    if isinstance(value, dict):
        return {key: hostile(item) for key, item in value.items()}
    if isinstance(value, list):
        return [hostile(item) for item in value]
    return HOSTILE if isinstance(value, str) else value


def sample_profiles() -> dict[str, dict[str, Any] | None]:
    rich = demo_profile(random.Random(11))
    rich["cart"] = {
        "items": [
            {"name": "Trail shoes", "price": 129.0, "sku": "sku-1", "image": "a.jpg", "qty": 1},
            {"name": "Merino wool socks", "price": 19.5, "sku": "sku-2", "image": "b.jpg", "qty": 3},
        ]
    }
    rich["preferences"] = {"topics": ["running", "hiking"], "frequency": "biweekly"}
    other = demo_profile(random.Random(12))
    # Optional fields left out, and values of the wrong type (a string price, a string topics).
    other["cart"] = {"items": [{"name": "Gift card", "sku": "gift-card"}, {"name": "Mug", "price": "14"}]}
    other["preferences"] = {"topics": "running", "frequency": "daily"}
    return {
        "typical": rich,
        "other": other,
        "empty": {},
        "unknown": None,
        "hostile": hostile(rich),
    }


def test_some_campaigns_ship_emails() -> None:
    assert "demo" in EMAIL_CAMPAIGNS


@pytest.mark.parametrize("campaign", EMAIL_CAMPAIGNS)
def test_rendered_amp_passes_the_official_validator(
    campaign: str, amp_validator: AmpValidator, signer: TokenSigner
) -> None:
    sendtime = SendTime(
        Templates(PROJECT_ROOT / "amp_templates"), CAMPAIGNS, signer, "https://amp.example.com", time.time
    )
    profiles = sample_profiles()
    rendered = {name: sendtime.render(campaign, f"r-{name}", profile) for name, profile in profiles.items()}
    results = amp_validator.validate_many([parts.amp for parts in rendered.values()])
    failures = {name: r.format() for name, r in zip(rendered, results, strict=True) if not r.passed}
    assert not failures, failures
    assert "<script>alert" not in rendered["hostile"].amp
