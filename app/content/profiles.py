"""Where open-time content gets a recipient's profile: the store, then (on a store miss) the upstream.

``ProfileLoader.load(recipient, done)`` calls ``done`` exactly once, with the profile (the store's
``Profile``, or ``Pulled`` from the upstream) or with the reason there is none. It never waits and
has no budget of its own: callers wait through ``app.content.shared_work``, whose deadlines answer
late requests while the lookup finishes and fills their cache. Built from the store's callback
(``ProfileRepository.fetch``, batched on its reader thread; with ``redis_url``, the Redis tier's
``fetch`` in front of it, which answers with the same records) and a done-callback on the upstream
task, because a Task per lookup costs more than the read itself.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Protocol

from app.log_throttle import ThrottledLog
from app.open_time.reasons import Reason, reason_of
from app.store.base import Profile, StoreBusy, StoreError
from app.upstream.client import NOT_FOUND, UpstreamClient, UpstreamResult

logger = logging.getLogger(__name__)


@dataclass(slots=True)
class Pulled:
    """A profile the upstream API gave (the store gives its own ``Profile`` records, passed on as
    they are: no copy per cold open)."""

    attributes: bytes  # the profile's attributes as an encoded JSON object
    updated_at: float  # when the upstream answered (wall clock, seconds): the data age is measured from it


# Both have ``attributes`` and ``updated_at``; a Profile also has the store's ``version``.
Loaded = Profile | Pulled
Done = Callable[[Loaded | str], None]
Wanted = Callable[[], bool]  # whether anyone still waits for a lookup (a queued read may be dropped)


class ProfileSource(Protocol):
    """Where the loader reads profiles: the store's ``ProfileRepository``, or the Redis shared tier in
    front of it (``app.shared.profiles.SharedProfiles``), which answers with the same records."""

    def fetch(
        self,
        recipient_id: str,
        callback: Callable[[Profile | StoreError | None], None],
        wanted: Wanted | None = None,
    ) -> None: ...


class ProfileLoader:
    """Store, then upstream on a store miss; answers each lookup once through its callback."""

    def __init__(
        self,
        store: ProfileSource,
        upstream: UpstreamClient | None = None,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self.upstream = upstream
        self._clock = clock
        self._pulls: set[asyncio.Task[UpstreamResult]] = set()
        self._warnings = ThrottledLog(logger)

    def load(self, recipient: str, done: Done, wanted: Wanted | None = None) -> None:
        """``wanted``: whether anyone still waits; a store read still queued when it says no is
        dropped, and ``done`` gets "overloaded" (as it does when too many reads are queued)."""
        self._store.fetch(recipient, partial(self._fetched, recipient, done), wanted)

    async def aclose(self) -> None:
        """Cancel upstream pulls still running (their callers are answered "upstream-error")."""
        for task in list(self._pulls):
            task.cancel()
        await asyncio.gather(*self._pulls, return_exceptions=True)

    def _fetched(self, recipient: str, done: Done, result: Profile | StoreError | None) -> None:
        if isinstance(result, Profile):  # the usual answer first: one call less per cold open
            done(result)
        elif result is None and self.upstream is not None:
            self._pull(recipient, done, self.upstream)
        elif isinstance(result, StoreBusy):  # counted by the store: no log line per request
            done(Reason.OVERLOADED)
        elif isinstance(result, StoreError):
            self._warnings.warning("store", "profile store failed: %s", result)
            done(Reason.STORE_ERROR)
        else:
            done(Reason.UNKNOWN_RECIPIENT)

    def _pull(self, recipient: str, done: Done, upstream: UpstreamClient) -> None:
        task = asyncio.ensure_future(upstream.fetch(recipient))
        self._pulls.add(task)
        task.add_done_callback(partial(self._pulled, done))

    def _pulled(self, done: Done, task: asyncio.Task[UpstreamResult]) -> None:
        self._pulls.discard(task)
        try:
            answer = self._answer(None if task.cancelled() else task.result())
        except Exception:
            logger.exception("the upstream profile lookup failed")
            answer = Reason.INTERNAL_ERROR
        done(answer)

    def _answer(self, result: UpstreamResult | None) -> Loaded | str:
        if result is None:
            return Reason.UPSTREAM_ERROR
        if result.attributes is not None:
            fetched_at = self._clock() if result.fetched_at is None else result.fetched_at
            return Pulled(result.attributes, fetched_at)
        if result.reason == NOT_FOUND:
            return Reason.UNKNOWN_RECIPIENT
        return reason_of(result.reason) if result.reason else Reason.UPSTREAM_ERROR
