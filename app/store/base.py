"""The store's interfaces, one small async repository per aggregate, shared by every backend.

A backend (SQLite, PostgreSQL) lives in ``app/store/<backend>/`` and holds all of its SQL
there; the rest of the app sees only these protocols and the records they pass. Every backend error
surfaces as ``StoreError``. tests/contract/ is the suite any backend must pass.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple, Protocol

import orjson

from app.campaigns.forms import AttrPath
from app.errors import OpentimeError
from app.ingest.events import Event
from app.store.tables import TableTransfer


class StoreError(OpentimeError):
    """The store is unusable or an operation failed; backends translate their driver errors to this."""


class StoreBusy(StoreError):
    """A profile read that was not sent to the store: too many were queued already, or nobody waited
    for it any more (``app.store.batching``). The open-time fallback reason is ``overloaded``."""


# -- profiles --------------------------------------------------------------------------------------


class Profile(NamedTuple):
    """One recipient's profile.

    ``attributes`` stays orjson-encoded: a million decoded dicts cost ~2x the memory and long GC pauses.
    ``version`` bumps only when the encoded attributes really change.
    """

    recipient_id: str
    attributes: bytes
    version: int
    updated_at: float


class ReadStats:
    """Profile reads so far: ``keys / batches`` is how well lookups share their queries."""

    __slots__ = ("batches", "keys")

    def __init__(self) -> None:
        self.batches = 0  # queries (jobs) sent to the backend for profile lookups
        self.keys = 0  # distinct recipient ids those queries asked for


class ProfileRepository(Protocol):
    """Async access to profiles. Implementations never do disk or network I/O on the event loop."""

    read_stats: ReadStats
    # Open-time reads queued or being read (distinct recipients), their bound, and those not read by
    # reason ("full", "abandoned"): see ``app.store.batching.BatchedLookups``.
    max_pending: int
    shed: Counter[str]

    @property
    def depth(self) -> int: ...

    async def get(self, recipient_id: str) -> Profile | None: ...

    def lookup(self, recipient_id: str) -> asyncio.Future[Profile | None]:
        """Like ``get`` but returns the future itself (no coroutine). Call it on the event loop."""
        ...

    def fetch(
        self,
        recipient_id: str,
        callback: Callable[[Profile | StoreError | None], None],
        wanted: Callable[[], bool] | None = None,
    ) -> None:
        """Call ``callback`` on the event loop with the profile, None, or the StoreError: the cheapest
        form, for the open-time path, which wakes its own waiters. ``wanted`` says whether anyone
        still waits for the answer: a queued read nobody wants is dropped (``StoreBusy``)."""
        ...

    async def get_many(self, recipient_ids: Sequence[str]) -> dict[str, Profile]: ...

    async def upsert_many(self, rows: Sequence[tuple[str, bytes]]) -> int:
        """Insert or replace ``(recipient_id, encoded attributes)`` rows in one transaction.

        Returns how many rows were inserted or changed; rows whose bytes are identical are left alone,
        so re-running the same upsert returns 0.
        """
        ...

    async def count(self) -> int: ...

    async def ping(self) -> None:
        """Raise StoreError if the store cannot serve reads."""
        ...


# -- events ----------------------------------------------------------------------------------------

EventStatus = Literal["applied", "duplicate", "unreadable-profile", "failed"]


class EventRepository(Protocol):
    """Webhook events, applied to profiles with the rules of ``app.ingest.events``."""

    async def commit(self, events: Sequence[Event], now: float) -> list[EventStatus]:
        """Record and apply ``events`` in order, in one transaction that is durable when this returns.

        One status per event: ``applied``; ``duplicate`` (its id was recorded before: nothing changes);
        ``unreadable-profile`` (the stored attributes are not a JSON object: left alone, id not
        recorded); ``failed`` (it could not be applied or stored: rolled back alone, id not recorded,
        the other events still commit). Fields resolve per field by ``(occurred_at, id)``, so arrival
        order does not matter. Raises StoreError when nothing could be committed.
        """
        ...


# -- form submissions ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Submission:
    submission_id: str
    campaign: str
    block: str
    recipient_id: str
    payload: bytes
    profile_updates: tuple[tuple[AttrPath, Any], ...] = ()


@dataclass(frozen=True, slots=True)
class Saved:
    duplicate: bool  # the same answer was already stored
    profile_changed: bool


class FormRepository(Protocol):
    """amp-form answers and the profile updates they carry."""

    async def save(self, submission: Submission, now: float) -> Saved:
        """Store the answer once (by ``submission_id``) and apply its profile updates, together.

        Updates apply on a re-submit too (the latest answer counts) and are stamped like event fields,
        ``(now, submission_id)``, so an older event arriving later does not overwrite them. A profile
        that is not a JSON object, or whose shape conflicts with the updates, is left alone (the
        answer is still stored). Raises StoreError when nothing was stored.
        """
        ...


# -- API keys --------------------------------------------------------------------------------------


class ApiKeyRecord(NamedTuple):
    """One stored API key: only the hash of its secret is kept."""

    key_id: str
    name: str
    scopes: frozenset[str]
    created_at: float
    revoked_at: float | None
    secret_hash: bytes


class ApiKeyRepository(Protocol):
    """The ``/api/`` keys. Secrets are compared by the caller (app.security.apikeys), in constant time."""

    async def insert(self, record: ApiKeyRecord) -> bool:
        """Store a new key; False (and nothing changed) when its ``key_id`` is taken."""
        ...

    async def find(self, key_id: str) -> ApiKeyRecord | None: ...

    async def all(self) -> list[ApiKeyRecord]:
        """Every key, oldest first (ties by key id)."""
        ...

    async def revoke(self, key_id: str, now: float) -> ApiKeyRecord | None:
        """Mark the key revoked at ``now`` unless it already is; the record after, or None if unknown."""
        ...


# -- privacy: erasure, access, retention ----------------------------------------------------------


class Erasure(NamedTuple):
    """The record of one erasure: no personal data, only a keyed hash of the recipient id."""

    erasure_id: str  # random, names the record (logs, API answers)
    id_hash: bytes  # HMAC-SHA256 of the recipient id under the store's record key
    erased_at: float
    requested_by: str  # the API key id, or "cli"
    profiles: int  # rows removed: 0 or 1
    events: int
    form_answers: int


class StoredProfile(NamedTuple):
    attributes: bytes
    field_times: bytes
    version: int
    updated_at: float


class StoredEvent(NamedTuple):
    id: str
    type: str
    occurred_at: str
    received_at: float


class StoredAnswer(NamedTuple):
    submission_id: str
    campaign: str
    block: str
    payload: bytes
    created_at: float


@dataclass(frozen=True, slots=True)
class RecipientData:
    """Everything the store holds about one recipient (for an access request)."""

    profile: StoredProfile | None
    events: list[StoredEvent]  # oldest received first
    form_answers: list[StoredAnswer]  # oldest first


RetentionTable = Literal["events", "form_submissions", "exposures"]
RETENTION_TABLES: tuple[RetentionTable, ...] = ("events", "form_submissions", "exposures")


class PrivacyRepository(Protocol):
    """Erasure and access requests, and the retention limit on events and form answers."""

    async def erase(self, recipient_id: str, record: Erasure) -> Erasure:
        """Delete the recipient's profile (and its field times), event ids and form answers, and store
        ``record`` with the counts removed, in one transaction; the record as stored. A recipient the
        store does not know is recorded too, with counts 0."""
        ...

    async def erasures(self, id_hash: bytes) -> list[Erasure]:
        """The erasure records of one hashed id, oldest first."""
        ...

    async def export(self, recipient_id: str) -> RecipientData: ...

    async def record_key(self, candidate: bytes) -> bytes:
        """The key erasure records are hashed with: stored once (``candidate``, by the first caller
        ever), then the same for every process."""
        ...

    async def claim(self, task: str, now: float, period_s: float) -> bool:
        """True for the one caller that claims ``task`` for the period: it last ran ``period_s`` or
        more before ``now`` (or never). Processes sharing the store then skip it until the next."""
        ...

    async def expire(self, table: RetentionTable, before: float, limit: int) -> int:
        """Delete up to ``limit`` rows of ``table`` stored before ``before`` (one short transaction);
        how many were deleted."""
        ...


# -- exposures (reports) ---------------------------------------------------------------------------

HOUR_S = 3600


class ExposureCount(NamedTuple):
    """How many opens (or clicks) of one block showed one variant, in one hour, by fetch class and outcome.

    Exposures are stored as these counters, not one row per open: the rows grow with the hours a
    campaign is opened and the combinations it shows, never with traffic. ``experiment`` is ``""``
    when a rule (or the default) chose the variant. ``hour``: the Unix time the hour starts.
    ``recorded``: the exposures recorded; ``weight``: what they stand for (each sampled open counts
    ``1 / exposure_sample_rate``), the estimate reports use.
    """

    campaign: str
    block: str
    variant: str
    experiment: str
    fetch_class: str
    outcome: str
    kind: str
    event: str
    hour: int
    recorded: int
    weight: float

    @property
    def key(self) -> str:
        """The counter's identity, one text (a table key ``opentime db copy`` can page through)."""
        return orjson.dumps([self.hour, *self[:8]]).decode()


class ExposureRepository(Protocol):
    """Counters of what opens and clicks showed (``app.reports``)."""

    async def add(self, counts: Sequence[ExposureCount]) -> None:
        """Add ``counts`` to the stored counters (creating those not there yet), in one transaction;
        two counts with the same key in one call add up."""
        ...

    async def read(self, campaign: str, since: float | None, until: float | None) -> list[ExposureCount]:
        """The counters of ``campaign`` whose hour starts at or after ``since`` and before ``until``
        (None: no bound), ordered by key."""
        ...


# -- the store -------------------------------------------------------------------------------------


class Store(Protocol):
    """One backend's repositories, opened and closed together (the app lifespan does it)."""

    schema: tuple[int, int] | None  # (schema version found, version now), once open

    @property
    def problem(self) -> str | None:
        """Why the store refuses every operation until restarted (SQLite: its file was deleted,
        replaced or corrupted under the server), or None: /readyz and /metrics report it."""
        ...

    async def open(self) -> None: ...

    async def close(self) -> None: ...

    @property
    def profiles(self) -> ProfileRepository: ...

    @property
    def events(self) -> EventRepository: ...

    @property
    def forms(self) -> FormRepository: ...

    @property
    def api_keys(self) -> ApiKeyRepository: ...

    @property
    def privacy(self) -> PrivacyRepository: ...

    @property
    def exposures(self) -> ExposureRepository: ...

    @property
    def transfer(self) -> TableTransfer:
        """Whole tables, for ``opentime db copy``."""
        ...
