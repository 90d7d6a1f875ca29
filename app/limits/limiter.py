"""Rate limits by scope and identity: Redis when every node shares one, else (or when it does not
answer) this process's buckets.

Scopes are the kinds of caller a limit is set for (``api``, ``webhooks``, ``preview``), each with its
own ``Rate`` from the settings; an identity is who is counted within one (an API key id, a webhook
secret's fingerprint). ``check`` never raises: a shared backend that fails or is slow (its calls
have ``redis_timeout_ms`` and a circuit breaker, ``app.shared.client``) answers None, and the local
buckets decide instead, counted in ``local_only``. The limit then holds per process, not per cluster:
fail open to a looser limit, never to an error.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Mapping
from typing import Protocol

from app.errors import OpentimeError
from app.limits.local import LocalBuckets
from app.limits.rate import Decision, Rate

SCOPES = ("api", "webhooks", "preview")


class SharedBuckets(Protocol):
    """Buckets every node shares (``app.shared.limits.SharedLimits``)."""

    async def check(self, key: str, rate: Rate) -> Decision | None:
        """The verdict, or None when the backend did not answer in time."""
        ...


class RateLimited(OpentimeError):
    """A request over its scope's limit: answered 429 (``app.limits.http``)."""

    def __init__(self, scope: str, decision: Decision) -> None:
        super().__init__(f"rate limit exceeded ({scope})")
        self.scope = scope
        self.decision = decision


class RateLimiter:
    """``await check(scope, identity)`` per request; ``limited`` and ``local_only`` are its metrics."""

    def __init__(
        self,
        rates: Mapping[str, Rate],
        *,
        shared: SharedBuckets | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        unknown = set(rates) - set(SCOPES)
        if unknown:
            raise ValueError(f"unknown rate limit scope(s): {', '.join(sorted(unknown))}")
        self.rates = dict(rates)
        self._shared = shared
        self._local = LocalBuckets()
        self._clock = clock
        self.limited: Counter[str] = Counter(dict.fromkeys(SCOPES, 0))  # 429s by scope
        self.local_only: Counter[str] = Counter()  # decided here because Redis did not answer

    async def check(self, scope: str, identity: str) -> Decision | None:
        """The verdict for one request of ``identity`` in ``scope`` (None: that scope has no limit)."""
        rate = self.rates.get(scope)
        if rate is None or not rate.enabled:
            return None
        key = f"{scope}:{identity}"
        decision = None if self._shared is None else await self._shared.check(key, rate)
        if decision is None:
            if self._shared is not None:
                self.local_only[scope] += 1
            decision = self._local.check(key, rate, self._clock())
        if not decision.allowed:
            self.limited[scope] += 1
        return decision

    async def admit(self, scope: str, identity: str) -> None:
        """Raise ``RateLimited`` when this request is over the limit."""
        decision = await self.check(scope, identity)
        if decision is not None and not decision.allowed:
            raise RateLimited(scope, decision)
