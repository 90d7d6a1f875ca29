"""Where the shared tier keeps profiles in Redis: ``<prefix>p:<generation>:<recipient>``.

The generation (``<prefix>gen``, absent means 0) is part of every profile key so that one INCR
invalidates every profile copy in Redis at once: when a writer's backlog overflows it no longer knows
whose tombstones it missed, so it moves everyone to a new generation (``RedisInvalidation``) and the
old generation's keys are never read again; they expire by their TTL. Each process knows the current
generation from its subscription (read when it (re)subscribes, then carried by the "drop everything"
message), and a writer's tombstones are written only if the generation it names is still current.
"""

from __future__ import annotations

from dataclasses import dataclass


def profile_key(prefix: str, generation: int, recipient: str) -> str:
    return f"{prefix}p:{generation}:{recipient}"


@dataclass(slots=True)
class ProfileKeys:
    """This process's view of the profile keys: one per process, shared by lookups and writers."""

    prefix: str
    generation: int = 0

    @property
    def generation_key(self) -> str:
        return f"{self.prefix}gen"

    def key(self, recipient: str) -> str:
        return f"{self.prefix}p:{self.generation}:{recipient}"
