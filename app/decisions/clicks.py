"""Click-through: what a reader was shown, remembered, so ``/click/<block>/<slot>`` leads to that link.

Safety first: a click can only lead to a link that came from the campaign and its data, on a host the
block allows (``safe_target``): https, no user info, no port other than 443, a host in the block's
``click_hosts`` (a list block; default its url field's base host) or the host of the configured
``link`` (an image block). Anything else lands on the campaign's ``click_default``. No target is
ever read from the click's own URL, so there is nothing to forge: the URL names a block and a slot.

``ClickMemory`` keeps what each open showed (the variant and the item links, per recipient and block)
in a bounded in-process LRU with a TTL, and, with ``redis_url``, in Redis too (``app.shared.client``),
so a click answered by another node (or after this one restarted) still finds it. Writes to Redis
happen in the background and only when what was shown changed, or the entry is half-way to expiry.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import orjson

if TYPE_CHECKING:
    from app.shared.client import SharedRedis

logger = logging.getLogger(__name__)

# Items of a click-tracked list carry this where their click URL goes; the open's answer replaces it
# with the URL's prefix (base, the presented token, the block), so the cached body names no token.
CLICK_MARK = b'"opentime-click:'
MAX_SLOTS = 100
_UNSAFE = re.compile(r"[\x00-\x20\x7f\\]")

Key = tuple[str, str, str]  # campaign, block, recipient


@dataclass(frozen=True, slots=True)
class Shown:
    """What one open of a block showed: the variant, and per slot the link of the item ("" for none)."""

    variant: str
    experiment: str | None
    links: tuple[str, ...]


def with_clicks(body: bytes, field: str, hosts: frozenset[str]) -> tuple[bytes, tuple[str, ...]]:
    """A list body whose items carry ``click`` (the mark and their slot), and each item's link (``""``
    when it has none or it is not safe: its click then lands on the campaign's default)."""
    data = orjson.loads(body)
    links = []
    for slot, item in enumerate(data.get("items", [])):
        link = item.get(field)
        links.append(link if isinstance(link, str) and safe_target(link, hosts) else "")
        item["click"] = f"{CLICK_MARK[1:].decode()}{slot}"
    return orjson.dumps(data), tuple(links)


def click_prefix(base_url: str, token: str, block: str) -> bytes:
    """What replaces ``CLICK_MARK`` in an answer: the opening quote, then the click URL up to the slot."""
    return f'"{base_url}/v1/{token}/click/{block}/'.encode()


def safe_target(url: str, hosts: frozenset[str]) -> bool:
    """True when ``url`` may be redirected to: an https URL on one of ``hosts``, nothing ambiguous."""
    if not url or len(url) > 2048 or _UNSAFE.search(url):
        return False
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return False
    if parts.scheme != "https" or parts.username is not None or parts.password is not None:
        return False
    host = parts.hostname
    return host is not None and host in hosts and port in (None, 443) and url.startswith("https://")


class ClickMemory:
    """(Campaign, block, recipient) → ``Shown``, bounded (``max_entries``, least recently shown first out) and
    kept ``ttl_s`` seconds; mirrored to Redis when ``shared`` is given."""

    def __init__(
        self,
        max_entries: int,
        ttl_s: float,
        clock: Callable[[], float],
        shared: SharedRedis | None = None,
    ) -> None:
        self._entries: OrderedDict[Key, tuple[float, Shown]] = OrderedDict()
        self._max = max_entries
        self._ttl = ttl_s
        self._clock = clock
        self._shared = shared
        self._writes: set[asyncio.Task[Any]] = set()

    def __len__(self) -> int:
        return len(self._entries)

    def remember(self, key: Key, shown: Shown) -> None:
        now = self._clock()
        entries = self._entries
        old = entries.get(key)
        entries[key] = (now + self._ttl, shown)
        entries.move_to_end(key)
        if len(entries) > self._max:
            entries.popitem(last=False)
        if self._shared is None:
            return
        if old is not None and old[1] == shown and old[0] - now > self._ttl / 2:
            return  # Redis has it, and it is fresh enough there
        task = asyncio.get_running_loop().create_task(self._put(key, shown))
        self._writes.add(task)
        task.add_done_callback(self._writes.discard)

    async def recall(self, key: Key) -> Shown | None:
        entry = self._entries.get(key)
        if entry is not None:
            if entry[0] > self._clock():
                return entry[1]
            del self._entries[key]
        if self._shared is None:
            return None
        values = await self._shared.get_many([self._redis_key(key)])
        raw = None if not values else values[0]
        return None if raw is None else _decoded(raw)

    async def aclose(self) -> None:
        for task in list(self._writes):
            task.cancel()

    async def _put(self, key: Key, shown: Shown) -> None:
        assert self._shared is not None
        value = orjson.dumps([shown.variant, shown.experiment, list(shown.links)])
        await self._shared.put(self._redis_key(key), value, self._ttl)

    def _redis_key(self, key: Key) -> str:
        assert self._shared is not None
        # The recipient id hashed: no personal data in Redis key names (they show in MONITOR, SCAN).
        digest = hashlib.blake2b("\x00".join(key).encode(), digest_size=16).hexdigest()
        return f"{self._shared.prefix}click:{digest}"


def _decoded(raw: bytes) -> Shown | None:
    try:
        variant, experiment, links = orjson.loads(raw)
        return Shown(str(variant), None if experiment is None else str(experiment), tuple(map(str, links)))
    except (orjson.JSONDecodeError, TypeError, ValueError):
        return None
