"""Erasing a recipient: the store first (one transaction), then every cache of every node.

After the store's commit, the recipient is announced on the invalidation seam like a changed profile
(``app.content.invalidation``), before the caller is answered: this process drops its rendered
lists, images and upstream answers (work in flight for the recipient is answered but not kept), and
with ``redis_url`` the profile copy in Redis is overwritten by a tombstone (a reader that read the
old row just before the commit cannot put it back) and every other process is told to drop its
caches. So nothing cached before the erasure is served after it, on any node, within the fan-out's
promise. Logs name the erasure record, never the id.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from app.content.invalidation import Invalidation
from app.privacy.records import RecordKey, id_hash, new_record
from app.store.base import Erasure, PrivacyRepository

logger = logging.getLogger(__name__)

CLI = "cli"  # ``requested_by`` of erasures made with ``opentime erase``


class Eraser:
    """Erases recipients and finds their erasure records; one per process (or CLI run)."""

    def __init__(
        self,
        privacy: PrivacyRepository,
        invalidation: Invalidation | None,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._privacy = privacy
        self._invalidation = invalidation
        self._clock = clock
        self._key = RecordKey(privacy)
        self.erased = 0  # erasures done by this process (for /metrics)

    async def erase(self, recipient_id: str, requested_by: str) -> Erasure:
        """Remove everything stored about the recipient, drop every cached copy, return the record."""
        record = new_record(await self._key.get(), recipient_id, self._clock(), requested_by)
        stored = await self._privacy.erase(recipient_id, record)
        if self._invalidation is not None:
            await self._invalidation.recipients_changed([recipient_id])
        self.erased += 1
        logger.info(
            "erasure %s by %s: removed %d profile(s), %d event(s), %d form answer(s)",
            stored.erasure_id,
            requested_by,
            stored.profiles,
            stored.events,
            stored.form_answers,
        )
        return stored

    async def records(self, recipient_id: str) -> list[Erasure]:
        """The erasure records of this id, oldest first (an auditor's check)."""
        return await self._privacy.erasures(id_hash(await self._key.get(), recipient_id))
