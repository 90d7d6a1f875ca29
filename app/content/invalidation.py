"""The invalidation seam: every writer of profiles says whose data changed; listeners drop caches.

Writers (the webhook event writer after its commit, a form answer that changed a profile) call
``recipients_changed`` once their change is durable and before they answer. Listeners are plain
functions that drop what this process cached from the old data (rendered lists, image recency, the
upstream cache); ``app.services`` subscribes them. ``LocalInvalidation`` reaches the listeners of
this process only. The shared implementation (``app.shared.invalidation.RedisInvalidation``, with
``redis_url``) also publishes, and calls its local listeners for every message it receives from the
other processes, so an event reaches the caches of every node.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Protocol

logger = logging.getLogger(__name__)

Listener = Callable[[frozenset[str]], None]


class Invalidation(Protocol):
    """Announces recipients whose profile changed to every subscribed listener."""

    def subscribe(self, listener: Listener) -> None:
        """Call ``listener`` with the recipient ids of every change from now on."""
        ...

    async def recipients_changed(self, recipients: Iterable[str]) -> None:
        """The profiles of ``recipients`` changed (and the change is committed)."""
        ...


class LocalInvalidation:
    """Calls this process's listeners directly: enough for one node."""

    def __init__(self) -> None:
        self._listeners: list[Listener] = []

    def subscribe(self, listener: Listener) -> None:
        self._listeners.append(listener)

    async def recipients_changed(self, recipients: Iterable[str]) -> None:
        self.tell(frozenset(recipients))

    def tell(self, changed: frozenset[str]) -> None:
        """Call every listener with ``changed`` (nobody when it is empty)."""
        if not changed:
            return
        for listener in self._listeners:
            try:
                listener(changed)
            except Exception:
                # One broken cache must not keep the others serving stale data.
                logger.exception("an invalidation listener failed")
