"""Synthetic demo data for ``opentime serve --demo`` and the benchmarks (deterministic by seed)."""

from __future__ import annotations

import random
from collections.abc import Iterator

import orjson

FIRST_NAMES = (
    "Ada",
    "Grace",
    "Linus",
    "Margaret",
    "Alan",
    "Katherine",
    "Dennis",
    "Barbara",
    "Ken",
    "Frances",
)
PRODUCTS = (
    ("Trail running shoes", 129.0),
    ("Merino wool socks", 19.5),
    ("Insulated bottle", 34.0),
    ("Rain shell jacket", 189.0),
    ("Headlamp 400 lm", 45.0),
    ("Packable daypack", 59.0),
    ("Camp mug", 14.0),
    ("Trekking poles", 99.0),
)
TIERS = ("bronze", "silver", "gold")
# Everyone's points expire at the end of 2027 (an instant: the date shown depends on the reader's zone).
POINTS_EXPIRE_AT = "2027-12-31T23:59:59Z"
DEMO_SENDER = "news@example.com"


def recipient_id(index: int) -> str:
    return f"cust-{index:07d}"


def demo_profile(rng: random.Random) -> dict[str, object]:
    picks = rng.sample(range(len(PRODUCTS)), 4)
    return {
        "first_name": rng.choice(FIRST_NAMES),
        "loyalty": {
            "points": rng.randrange(0, 5000),
            "tier": rng.choice(TIERS),
            "expires_at": POINTS_EXPIRE_AT,
        },
        "recommendations": [
            {
                "name": PRODUCTS[i][0],
                "price": PRODUCTS[i][1],
                "sku": f"sku-{i:04d}",
                "image": f"sku-{i:04d}.jpg",
            }
            for i in picks
        ],
    }


def demo_rows(count: int, *, seed: int = 7) -> Iterator[tuple[str, bytes]]:
    """``count`` synthetic recipients as (recipient id, encoded attributes)."""
    rng = random.Random(seed)  # noqa: S311 - synthetic data, not security
    for index in range(1, count + 1):
        yield recipient_id(index), orjson.dumps(demo_profile(rng))
