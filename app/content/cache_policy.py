"""Who may keep which response, and for how long: every cache header of the service is decided here.

Mail clients and their image proxies must refetch at every open (Gmail honours ``no-cache,
max-age=0``; the rest of ``no-cache, no-store, must-revalidate, max-age=0`` covers the others), so
they get that for images; our own CDN is told separately, through the targeted headers it reads
(``CDN-Cache-Control``, RFC 9213, and ``Surrogate-Control``), that it may keep a copy briefly and
serve it when the origin errs. Degraded output is kept for a few seconds only. amp-list JSON is
``private, no-store`` (it depends on the requesting sender). See ../shared/design.md section 6.

``Surrogate-Key`` tags per-recipient images with a keyed hash of the recipient id (no personal data
in headers a CDN logs), so an event for that recipient can purge every CDN copy, and every image of
a campaign with ``c-<campaign>``. The hash is keyed by the ring's signing key (``for_ring``): after a
key rotation, copies cached before it carry the old key's hash until they expire (``opentime cdn key
--all-keys`` prints both).

A running countdown is true to the second: its URL is the same at every open, so a copy kept by our CDN
must not outlive one second (``live_timer``), and no stale copy is served when the origin errs (it would
show more time left than there is).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from app.security import crypto
from app.security.keyring import KeyRing

Header = tuple[bytes, bytes]
ResponseKind = Literal["image", "shared-image", "fallback-image", "amp-json", "no-store"]

NO_CACHE = b"no-cache, no-store, must-revalidate, max-age=0"
PRIVATE_NO_STORE = b"private, no-store"
NO_STORE = b"no-store"
# Ready-made headers for the fixed policies of design.md section 6:
# per-recipient JSON and HTML at open time (they vary with the sender and the recipient) ...
OPEN_TIME_PRIVATE: Header = (b"cache-control", PRIVATE_NO_STORE)
# ... and everything for systems and operators (API, webhooks, health, metrics, preview, rejections).
NO_STORE_HEADER: Header = (b"cache-control", NO_STORE)
NO_STORE_HEADERS: dict[str, str] = {"cache-control": NO_STORE.decode()}
# Static pictures campaigns link to (the same for every reader, changed by a deploy): anyone may keep
# them for a day; a changed picture gets a new file name.
STATIC_ASSET_HEADERS: dict[str, str] = {"cache-control": "public, max-age=86400"}
IMAGE_CDN_TTL_SECONDS = 30
FALLBACK_CDN_TTL_SECONDS = 5
# A running countdown's frame 0 is the time left when it was built: a CDN copy may be at most this old.
LIVE_TIMER_CDN_TTL_SECONDS = 1
STALE_IF_ERROR_SECONDS = 86_400
SURROGATE_KEY_BYTES = 8


class CachePolicy:
    """Cache headers per response kind; TTLs are constructor arguments, the key hashes recipients."""

    def __init__(
        self,
        surrogate_secret: bytes,
        *,
        image_cdn_ttl_seconds: int = IMAGE_CDN_TTL_SECONDS,
        fallback_cdn_ttl_seconds: int = FALLBACK_CDN_TTL_SECONDS,
        stale_if_error_seconds: int = STALE_IF_ERROR_SECONDS,
    ) -> None:
        self._surrogate = crypto.MacKey(crypto.derive_key(surrogate_secret, "surrogate-key"))
        self._image_ttl = image_cdn_ttl_seconds
        self._fallback_ttl = fallback_cdn_ttl_seconds
        self._stale = stale_if_error_seconds

    @classmethod
    def for_ring(cls, ring: KeyRing) -> CachePolicy:
        """The policy the server uses: surrogate keys hashed with the ring's signing key."""
        return cls(ring.signing_key.secret)

    def surrogate_key(self, recipient: str) -> str:
        """``r-<keyed hash>``: what a purge for this recipient names."""
        return "r-" + self._surrogate.mac(recipient.encode(), SURROGATE_KEY_BYTES).hex()

    def image(self, recipient: str, campaign: str) -> list[Header]:
        """A per-recipient image: no copy outside our CDN, a short one inside it."""
        keys = f"{self.surrogate_key(recipient)} {campaign_key(campaign)}"
        return [*self._cdn(NO_CACHE, self._image_ttl), (b"surrogate-key", keys.encode())]

    def shared_image(self, campaign: str, shared_until: float) -> list[Header]:
        """Same for everyone (e.g. an ended countdown): the CDN keeps it for ``shared_until`` seconds."""
        ttl = max(int(shared_until), 0)
        return [*self._cdn(NO_CACHE, ttl), (b"surrogate-key", campaign_key(campaign).encode())]

    def live_timer(self, campaign: str, recipient: str | None) -> list[Header]:
        """A running countdown (``recipient``: the deadline is theirs): a second in our CDN, never stale."""
        keys = campaign_key(campaign)
        if recipient is not None:
            keys = f"{self.surrogate_key(recipient)} {keys}"
        return [
            *self._cdn(NO_CACHE, LIVE_TIMER_CDN_TTL_SECONDS, stale=False),
            (b"surrogate-key", keys.encode()),
        ]

    def fallback_image(self) -> list[Header]:
        """Degraded output: the CDN may absorb a burst, then asks again."""
        return self._cdn(NO_CACHE, self._fallback_ttl, stale=False)

    def headers(self, kind: ResponseKind) -> list[Header]:
        """Headers for the kinds that need no arguments."""
        if kind == "fallback-image":
            return self.fallback_image()
        if kind == "amp-json":
            return [(b"cache-control", PRIVATE_NO_STORE)]
        if kind == "no-store":
            return [(b"cache-control", b"no-store")]
        raise ValueError(f"{kind} headers need arguments: use image() or shared_image()")

    def _cdn(self, browser: bytes, ttl: int, *, stale: bool = True) -> list[Header]:
        value = f"max-age={ttl}, stale-if-error={self._stale}" if stale else f"max-age={ttl}"
        encoded = value.encode()
        return [(b"cache-control", browser), (b"cdn-cache-control", encoded), (b"surrogate-control", encoded)]


def campaign_key(campaign: str) -> str:
    """``c-<campaign>``: what a purge of every image of a campaign names."""
    return f"c-{campaign}"


def etag_for(content_key: str) -> bytes:
    """A strong validator: the content key already hashes everything the bytes depend on."""
    return f'"{content_key}"'.encode()


def not_modified(if_none_match: bytes | None, etag: bytes) -> bool:
    """True when the request's ``If-None-Match`` lists ``etag`` (or ``*``); weak forms match too."""
    if not if_none_match:
        return False
    tags: Sequence[bytes] = [t.strip() for t in if_none_match.split(b",")]
    return any(t == b"*" or t.removeprefix(b"W/") == etag for t in tags)
