"""Send-time rendering throughput: recipients rendered per second (all three parts), one process.

    python3 bench/render.py [--recipients 10000] [--eml]

For each shipped campaign with email templates, renders a batch of synthetic recipients (the same
path as ``opentime render`` and ``POST /api/render``: token signing, Jinja for the subject, text,
AMP and HTML parts, and the AMP limit checks) and prints recipients/s and mean bytes per part.
Target (issue 3): >= 1,000 recipients/s.
"""

from __future__ import annotations

import argparse
import random
import time
from datetime import UTC, datetime
from typing import Any

from app.campaigns.loader import load_campaigns
from app.campaigns.sendtime import SendTime
from app.config import PROJECT_ROOT
from app.demo import demo_profile, recipient_id
from app.render.addresses import parse_mailbox
from app.render.email import to_message
from app.render.templates import Templates
from app.security.keyring import new_keyring
from app.security.tokens import TokenSigner

SENDER = parse_mailbox("Example Outfitters <news@example.com>")


def profiles(count: int) -> list[dict[str, Any]]:
    rng = random.Random(5)
    batch = []
    for _ in range(count):
        profile = demo_profile(rng)
        profile["cart"] = {"items": profile["recommendations"][:2]}
        batch.append(profile)
    return batch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipients", type=int, default=10_000)
    parser.add_argument("--eml", action="store_true", help="also build the MIME message per recipient")
    args = parser.parse_args()
    campaigns = load_campaigns(
        PROJECT_ROOT / "amp_templates",
        PROJECT_ROOT / "static",
        default_budget_ms=150,
        public_base_url="https://amp.example.com",
    )
    signer = TokenSigner(new_keyring(datetime.now(UTC)))
    sendtime = SendTime(
        Templates(PROJECT_ROOT / "amp_templates"), campaigns, signer, "https://amp.example.com", time.time
    )
    batch = profiles(args.recipients)
    print(f"{'campaign':<16}{'recipients/s':>14}{'µs/recipient':>14}{'text B':>9}{'amp B':>9}{'html B':>9}")
    for name in sorted(n for n, c in campaigns.items() if c.has_email):
        sendtime.render(name, "warm-up", batch[0])
        sizes = {"text": 0, "amp": 0, "html": 0}
        started = time.perf_counter()
        for index, profile in enumerate(batch):
            parts = sendtime.render(name, recipient_id(index), profile)
            if args.eml:
                bytes(to_message(parts, sender=SENDER, to=None, now=time.time()))
            for part, size in parts.sizes().items():
                sizes[part] += size
        elapsed = time.perf_counter() - started
        rate = len(batch) / elapsed
        mean = {part: total // len(batch) for part, total in sizes.items()}
        print(
            f"{name:<16}{rate:>14,.0f}{1e6 / rate:>14,.0f}{mean['text']:>9}{mean['amp']:>9}{mean['html']:>9}"
        )


if __name__ == "__main__":
    main()
