"""The PostgreSQL schema and its versioned migrations, applied under an advisory lock.

The version lives in a one-row ``schema_version`` table; the numbers match SQLite's ``user_version``
(4 means profiles, api_keys, form_submissions, events, erasures, store_secrets and maintenance in
both; 5 adds exposures). Every process checks the version at start-up inside one transaction holding
``pg_advisory_xact_lock``, so several processes starting at once against a new database create it
once and never see a half-made schema.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from app.store.versions import check_version

if TYPE_CHECKING:
    import asyncpg

SCHEMA_VERSION = 5
# Any constant that other applications on the same database are unlikely to pick ("opentime" in hex).
MIGRATION_LOCK = 0x6F70656E74696D65
# Migrations by target version; each runs once, in the start-up transaction.
MIGRATIONS: dict[int, tuple[str, ...]] = {
    1: (
        # bytea, not jsonb: the attributes are returned byte for byte as stored (identical bytes are
        # "no change"), and an unreadable profile is kept as it is.
        """CREATE TABLE profiles (
            recipient_id text PRIMARY KEY,
            attributes bytea NOT NULL,
            field_times bytea NOT NULL DEFAULT '{}'::bytea,
            version bigint NOT NULL,
            updated_at double precision NOT NULL
        )""",
    ),
    2: (
        """CREATE TABLE api_keys (
            key_id text PRIMARY KEY,
            name text NOT NULL,
            secret_hash bytea NOT NULL,
            scopes text NOT NULL,
            created_at double precision NOT NULL,
            revoked_at double precision
        )""",
        """CREATE TABLE form_submissions (
            submission_id text PRIMARY KEY,
            campaign text NOT NULL,
            block text NOT NULL,
            recipient_id text NOT NULL,
            payload bytea NOT NULL,
            created_at double precision NOT NULL
        )""",
        "CREATE INDEX form_submissions_by_recipient ON form_submissions (recipient_id)",
    ),
    3: (
        # Applied webhook events, by id: a replayed id is a no-op (app/store/postgres/events.py).
        """CREATE TABLE events (
            id text PRIMARY KEY,
            recipient text NOT NULL,
            type text NOT NULL,
            occurred_at text NOT NULL,
            received_at double precision NOT NULL
        )""",
    ),
    4: (
        # Erasure and access requests read a recipient's events; retention deletes by age.
        "CREATE INDEX events_by_recipient ON events (recipient)",
        "CREATE INDEX events_by_received_at ON events (received_at)",
        "CREATE INDEX form_submissions_by_created_at ON form_submissions (created_at)",
        # One row per erasure, without the id: a keyed hash of it (app/store/postgres/privacy.py).
        """CREATE TABLE erasures (
            erasure_id text PRIMARY KEY,
            id_hash bytea NOT NULL,
            erased_at double precision NOT NULL,
            requested_by text NOT NULL,
            profiles integer NOT NULL,
            events integer NOT NULL,
            form_answers integer NOT NULL
        )""",
        "CREATE INDEX erasures_by_id_hash ON erasures (id_hash)",
        # Secrets the store keeps for itself (the key of erasure records).
        "CREATE TABLE store_secrets (name text PRIMARY KEY, secret bytea NOT NULL)",
        # When periodic work (retention) last ran, so nodes sharing the store run it once a period.
        "CREATE TABLE maintenance (task text PRIMARY KEY, claimed_at double precision NOT NULL)",
    ),
    5: (
        # Exposure counters per hour (app/store/postgres/exposures.py): reports read a campaign's hours,
        # retention deletes by hour.
        """CREATE TABLE exposures (
            bucket text PRIMARY KEY,
            campaign text NOT NULL,
            block text NOT NULL,
            variant text NOT NULL,
            experiment text NOT NULL,
            fetch_class text NOT NULL,
            outcome text NOT NULL,
            kind text NOT NULL,
            event text NOT NULL,
            hour double precision NOT NULL,
            recorded bigint NOT NULL,
            weight double precision NOT NULL
        )""",
        "CREATE INDEX exposures_by_campaign ON exposures (campaign, hour)",
        "CREATE INDEX exposures_by_hour ON exposures (hour)",
    ),
}
_VERSION_TABLE = "CREATE TABLE schema_version (version integer NOT NULL)"
# Looked up first, in the schema CREATE would use: a role without CREATE can start on a current schema.
_HAS_VERSION_TABLE = """
SELECT EXISTS (SELECT 1 FROM pg_tables WHERE schemaname = current_schema() AND tablename = 'schema_version')
"""


async def migrate(
    conn: asyncpg.Connection, label: str, *, upgrade: bool, create: bool = True
) -> tuple[int, int]:
    """Bring the schema to ``SCHEMA_VERSION``; returns (version found, version now). Without
    ``create``, a database with no Opentime schema is refused before anything is created in it."""
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", MIGRATION_LOCK)
        if not await conn.fetchval(_HAS_VERSION_TABLE):
            check_version(0, SCHEMA_VERSION, label, upgrade=upgrade, create=create)
            await conn.execute(_VERSION_TABLE)
        found = await conn.fetchval("SELECT max(version) FROM schema_version")
        version = int(found or 0)
        check_version(version, SCHEMA_VERSION, label, upgrade=upgrade, backup="the database", create=create)
        for target in range(version + 1, SCHEMA_VERSION + 1):
            for statement in MIGRATIONS[target]:
                await conn.execute(statement)
        if version < SCHEMA_VERSION:
            await conn.execute("DELETE FROM schema_version")
            await conn.execute("INSERT INTO schema_version (version) VALUES ($1)", SCHEMA_VERSION)
    return version, SCHEMA_VERSION
