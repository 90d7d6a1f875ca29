"""The resources one server process owns, created in the app's lifespan and passed via state."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass

from app.cache import BoundedCache
from app.campaigns import Campaign, load_campaigns
from app.config import Settings
from app.keyring import load_keyring
from app.open_time import Entry, Key, ListContent
from app.store import open_store
from app.store.base import ProfileStore
from app.tokens import TokenSigner, TokenVerifier


@dataclass(frozen=True, slots=True)
class Services:
    settings: Settings
    verifier: TokenVerifier
    signer: TokenSigner
    campaigns: Mapping[str, Campaign]
    store: ProfileStore
    lists: ListContent
    clock: Callable[[], float]


def load_campaigns_for(settings: Settings) -> dict[str, Campaign]:
    return load_campaigns(
        settings.templates_dir, settings.static_dir, default_budget_ms=settings.default_budget_ms
    )


@asynccontextmanager
async def running_services(
    settings: Settings, *, clock: Callable[[], float] = time.time
) -> AsyncIterator[Services]:
    """Open everything a server process needs; close it all on the way out."""
    ring = load_keyring(settings.keys_file)
    campaigns = load_campaigns_for(settings)
    store = open_store(settings.database_url)
    await store.open()
    cache: BoundedCache[Key, Entry] = BoundedCache(settings.cache_max_bytes, size_of=len)
    lists = ListContent(
        store,
        cache,
        ttl_seconds=settings.cache_ttl_seconds,
        negative_ttl_seconds=settings.negative_ttl_seconds,
    )
    try:
        yield Services(
            settings=settings,
            verifier=TokenVerifier(ring),
            signer=TokenSigner(ring, default_ttl_seconds=settings.token_ttl_days * 86400),
            campaigns=campaigns,
            store=store,
            lists=lists,
            clock=clock,
        )
    finally:
        await lists.aclose()
        await store.close()
