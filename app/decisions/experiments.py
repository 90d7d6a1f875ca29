"""A/B/n experiments (pure): a recipient's variant, the same on every open, every node, every part.

A recipient is hashed once per experiment: BLAKE2b keyed with the experiment's ``salt`` (default
``<campaign>/<experiment>``) over the recipient id. Two independent numbers come out of the one
digest, each in a space of ``BUCKETS`` (10,000) buckets:

- the holdout bucket: below 100 times ``holdout_percent`` the recipient is held out (sees the block's
  default content, recorded as variant ``holdout``);
- the variant bucket, looked up in a table built at load by weighted rendezvous hashing: bucket ``b``
  goes to the variant ``v`` with the smallest ``-ln(u(v, b)) / weight(v)``, where ``u`` is a hash of
  the variant's name and the bucket. Every variant's share is its weight's share (to within the
  granularity of 10,000 buckets).

What a change of the ``[experiments]`` table does to existing assignments, precisely:

- raising one variant's weight moves recipients only *into* that variant; lowering it moves
  recipients only *out of* it; no recipient ever moves between two variants whose weights did not
  change;
- adding a variant moves recipients only into the new one; removing one moves only its recipients;
- changing ``holdout_percent`` moves recipients only between the holdout and the variant they had
  (their variant bucket does not depend on the holdout);
- renaming a variant or changing the salt reshuffles everyone (the name and the salt are hashed).

No state is kept anywhere: the assignment is a function of the salt, the names and weights, and the
recipient id, so every node and every part of the email compute the same one.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping
from dataclasses import dataclass, field

BUCKETS = 10_000
HOLDOUT = "holdout"
MEMO_LIMIT = 65_536  # recipients whose assignment one experiment remembers (cleared when full)


@dataclass(frozen=True, slots=True)
class Experiment:
    name: str
    salt: bytes
    weights: tuple[tuple[str, float], ...]  # in declared order
    holdout_buckets: int  # buckets [0, holdout_buckets) of the holdout space are held out
    table: tuple[str, ...]  # variant bucket -> variant name
    # Assignments already computed (a pure function of the recipient, so never stale): a re-open
    # costs a dict lookup instead of a keyed hash.
    memo: dict[str, str] = field(default_factory=dict, compare=False, repr=False)

    def assign(self, recipient: str) -> str:
        """The recipient's variant name, or "holdout"."""
        memo = self.memo
        variant = memo.get(recipient)
        if variant is None:
            if len(memo) >= MEMO_LIMIT:
                memo.clear()
            holdout, bucket = buckets_of(self.salt, recipient)
            variant = memo[recipient] = HOLDOUT if holdout < self.holdout_buckets else self.table[bucket]
        return variant

    @property
    def variants(self) -> tuple[str, ...]:
        return tuple(name for name, _ in self.weights)


def experiment(name: str, weights: Mapping[str, float], holdout_percent: float, salt: str) -> Experiment:
    """Build the experiment (its bucket table); weights must be positive, holdout in [0, 100)."""
    pairs = tuple(weights.items())
    return Experiment(
        name=name,
        salt=salt.encode(),
        weights=pairs,
        holdout_buckets=round(holdout_percent * BUCKETS / 100),
        table=tuple(_rendezvous(pairs, bucket) for bucket in range(BUCKETS)),
    )


def buckets_of(salt: bytes, recipient: str) -> tuple[int, int]:
    """(holdout bucket, variant bucket) of a recipient: two independent numbers from one keyed digest."""
    digest = hashlib.blake2b(recipient.encode(), key=salt[:64], digest_size=16).digest()
    return int.from_bytes(digest[:8], "big") % BUCKETS, int.from_bytes(digest[8:], "big") % BUCKETS


def _rendezvous(weights: tuple[tuple[str, float], ...], bucket: int) -> str:
    best, best_score = "", math.inf
    for name, weight in weights:
        score = -math.log(_unit(name, bucket)) / weight
        if score < best_score:
            best, best_score = name, score
    return best


def _unit(name: str, bucket: int) -> float:
    """A uniform number in (0, 1) for (variant, bucket): independent of the salt, the weights and order."""
    digest = hashlib.blake2b(f"{name}\x00{bucket}".encode(), digest_size=8).digest()
    return (int.from_bytes(digest, "big") + 1) / (2**64 + 2)
