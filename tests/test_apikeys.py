"""API keys: storage and authentication on real SQLite files, the CLI, and the 401/403 checks over HTTP."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import sqlite3
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import pytest
from click.testing import CliRunner
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.testclient import TestClient

from app.cli.apikeys import apikeys
from app.errors import HTTPError
from app.limits.limiter import RateLimiter
from app.security import apikeys as refusals  # the ApiKeyError subclasses
from app.security.api_auth import require_scope
from app.security.apikeys import (
    SCOPES,
    ApiKeyCache,
    authenticate,
    create_key,
    list_keys,
    parse_key,
    revoke_key,
)
from app.store import SQLiteProfileStore

T = TypeVar("T")
NOW = 1_700_000_000.0


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class CountingStore(SQLiteProfileStore):
    """A real store that counts reads, to see what the cache saves."""

    reads = 0

    async def run_read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        self.reads += 1
        return await super().run_read(fn)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "keys.db"


@pytest.fixture
async def store(db_path: Path) -> AsyncIterator[CountingStore]:
    store = CountingStore(db_path)
    await store.open()
    yield store
    await store.close()


# -- pure parts ------------------------------------------------------------------------------------


def test_parse_key_accepts_underscores_in_the_secret() -> None:
    secret = "ab_" + "x" * 40
    assert parse_key(f"otk_0123abcd_{secret}") == ("0123abcd", secret)


@pytest.mark.parametrize(
    "presented",
    [
        "otk_0123abcd",
        "otk_0123ABCD_" + "x" * 43,  # key ids are lowercase hex
        "otk_0123abcd_" + "x" * 42,
        "otk_0123abcd_" + "x" * 43 + "\n",
        "xtk_0123abcd_" + "x" * 43,
        "otk_0123abcd_" + "x" * 10_000,
        "otk_0123abcd_" + "+" * 43,  # base64url only
    ],
)
def test_parse_key_rejects_malformed(presented: str) -> None:
    with pytest.raises(refusals.MalformedKey):
        parse_key(presented)


def test_parse_key_missing() -> None:
    with pytest.raises(refusals.MissingKey):
        parse_key("")


# -- storage and authentication --------------------------------------------------------------------


@pytest.mark.anyio
async def test_create_authenticate_list_revoke(store: CountingStore) -> None:
    key, plaintext = await create_key(store.api_keys, " billing ", ["render", "tokens"], NOW)
    assert plaintext.startswith(f"otk_{key.key_id}_") and len(plaintext) == 4 + 8 + 1 + 43
    assert (key.name, sorted(key.scopes), key.created_at, key.revoked) == (
        "billing",
        ["render", "tokens"],
        NOW,
        False,
    )
    assert await authenticate(store.api_keys, plaintext) == key
    assert await list_keys(store.api_keys) == [key]
    revoked = await revoke_key(store.api_keys, key.key_id, NOW + 5)
    assert revoked.revoked_at == NOW + 5
    assert (await revoke_key(store.api_keys, key.key_id, NOW + 9)).revoked_at == NOW + 5  # idempotent
    with pytest.raises(refusals.RevokedKey):
        await authenticate(store.api_keys, plaintext)
    with pytest.raises(refusals.UnknownKey):
        await revoke_key(store.api_keys, "ffffffff", NOW)


@pytest.mark.anyio
async def test_wrong_secret_and_unknown_id(store: CountingStore) -> None:
    key, plaintext = await create_key(store.api_keys, "a", ["render"], NOW)
    with pytest.raises(refusals.BadSecret):
        await authenticate(store.api_keys, plaintext[:-1] + ("A" if plaintext[-1] != "A" else "B"))
    other_id = "00000000" if key.key_id != "00000000" else "11111111"
    with pytest.raises(refusals.UnknownKey):
        await authenticate(store.api_keys, plaintext.replace(key.key_id, other_id))


@pytest.mark.anyio
async def test_revoked_key_with_wrong_secret_reads_as_bad_secret(store: CountingStore) -> None:
    # Attack: probe key ids with made-up secrets to learn which keys were revoked. Only the holder
    # of the real secret may learn that.
    key, _ = await create_key(store.api_keys, "a", ["render"], NOW)
    await revoke_key(store.api_keys, key.key_id, NOW)
    with pytest.raises(refusals.BadSecret):
        await authenticate(store.api_keys, f"otk_{key.key_id}_" + "x" * 43)


@pytest.mark.anyio
async def test_stored_hash_is_not_the_secret(store: CountingStore, db_path: Path) -> None:
    _, plaintext = await create_key(store.api_keys, "a", ["render"], NOW)
    secret = plaintext.split("_", 2)[2]
    with closing(sqlite3.connect(db_path)) as conn:
        dump = "\n".join(conn.iterdump())
        (stored,) = conn.execute("SELECT secret_hash FROM api_keys").fetchone()
    assert secret not in dump and plaintext not in dump
    assert stored == hashlib.sha256(secret.encode()).digest()


@pytest.mark.anyio
async def test_create_rejects_unknown_scopes_and_bad_names(store: CountingStore) -> None:
    with pytest.raises(ValueError, match=r"unknown scope\(s\) rendr; valid: admin, "):
        await create_key(store.api_keys, "a", ["rendr"], NOW)
    with pytest.raises(ValueError, match="at least one scope"):
        await create_key(store.api_keys, "a", [], NOW)
    for name in ("", " ", "x" * 101, "tab\there"):
        with pytest.raises(ValueError, match="key name"):
            await create_key(store.api_keys, name, ["render"], NOW)
    assert await list_keys(store.api_keys) == []


@pytest.mark.anyio
async def test_scope_implication(store: CountingStore) -> None:
    admin, _ = await create_key(store.api_keys, "ops", ["admin"], NOW)
    render, _ = await create_key(store.api_keys, "esp", ["render"], NOW)
    assert all(admin.allows(scope) for scope in SCOPES)
    assert render.allows("render")
    assert not any(render.allows(scope) for scope in SCOPES - {"render"})


@pytest.mark.anyio
async def test_cache_skips_sqlite_and_revocation_applies_within_ttl(
    store: CountingStore, db_path: Path
) -> None:
    clock = Clock()
    cache = ApiKeyCache(ttl_seconds=30, clock=clock)
    key, plaintext = await create_key(store.api_keys, "a", ["render"], NOW)
    await authenticate(store.api_keys, plaintext, cache=cache)
    reads = store.reads
    clock.now += 10
    assert await authenticate(store.api_keys, plaintext, cache=cache) == key
    assert store.reads == reads
    with pytest.raises(refusals.BadSecret):  # a cache hit still checks the secret
        await authenticate(store.api_keys, f"otk_{key.key_id}_" + "x" * 43, cache=cache)

    # Revoked by another process (the CLI): this process's cache does not know yet.
    other = SQLiteProfileStore(db_path)
    await other.open()
    await revoke_key(other.api_keys, key.key_id, NOW)
    await other.close()
    clock.now = 1029.5  # hits never extend the TTL: still 29.5 s after the read
    assert await authenticate(store.api_keys, plaintext, cache=cache) == key
    clock.now = 1030.0
    with pytest.raises(refusals.RevokedKey):
        await authenticate(store.api_keys, plaintext, cache=cache)
    assert len(cache) == 0  # failures are not cached


@pytest.mark.anyio
async def test_revoking_in_process_clears_the_cache_at_once(store: CountingStore) -> None:
    cache = ApiKeyCache(clock=Clock())
    key, plaintext = await create_key(store.api_keys, "a", ["render"], NOW)
    await authenticate(store.api_keys, plaintext, cache=cache)
    await revoke_key(store.api_keys, key.key_id, NOW, cache=cache)
    with pytest.raises(refusals.RevokedKey):
        await authenticate(store.api_keys, plaintext, cache=cache)


@pytest.mark.anyio
async def test_cache_is_bounded(store: CountingStore) -> None:
    cache = ApiKeyCache(max_entries=3, clock=Clock())
    for index in range(5):
        _, plaintext = await create_key(store.api_keys, f"k{index}", ["render"], NOW)
        await authenticate(store.api_keys, plaintext, cache=cache)
    assert len(cache) == 3


# -- CLI -------------------------------------------------------------------------------------------


def run(*args: str, database: Path) -> tuple[int, str, str]:
    env = {"OPENTIME_DATABASE_URL": f"sqlite:///{database}"}
    result = CliRunner().invoke(apikeys, list(args), env=env, catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


def test_cli_create_list_revoke(db_path: Path) -> None:
    code, out, err = run(
        "create", "--name", "esp", "--scope", "render", "--scope", "tokens", database=db_path
    )
    assert code == 0 and "cannot be shown again" in err
    plaintext = out.strip()
    key_id, secret = parse_key(plaintext)
    assert plaintext not in err

    code, out, _ = run("list", database=db_path)
    lines = out.splitlines()
    assert code == 0 and len(lines) == 2
    listed_id, name, scopes, created, revoked = lines[1].split("\t")
    assert (listed_id, name, scopes, revoked) == (key_id, "esp", "render,tokens", "-")
    assert created.endswith("Z")
    assert secret not in out and hashlib.sha256(secret.encode()).hexdigest() not in out

    assert run("revoke", key_id, database=db_path)[0] == 0
    assert run("list", database=db_path)[1].splitlines()[1].split("\t")[4].endswith("Z")

    async def check() -> None:
        store = SQLiteProfileStore(db_path)
        await store.open()
        try:
            with pytest.raises(refusals.RevokedKey):
                await authenticate(store.api_keys, plaintext)
        finally:
            await store.close()

    asyncio.run(check())


def test_cli_errors(db_path: Path) -> None:
    code, _, err = run("create", "--name", "x", "--scope", "rendr", database=db_path)
    assert code == 2 and "rendr" in err and "personalization:read" in err and "tokens" in err
    code, _, err = run("create", "--name", "x", database=db_path)
    assert code == 2 and "--scope" in err
    code, _, err = run("create", "--name", " ", "--scope", "render", database=db_path)
    assert code == 2 and "key name" in err
    code, _, err = run("revoke", "abcdef12", database=db_path)
    assert code == 1 and "abcdef12" in err
    code, _, err = run("list", "--database-url", "mysql://x", database=db_path)
    assert code == 2 and "mysql" in err


# -- HTTP ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FakeServices:
    store: SQLiteProfileStore
    api_key_cache: ApiKeyCache
    limits: RateLimiter = field(default_factory=lambda: RateLimiter({}))  # no limits here


async def whoami(request: Request) -> JSONResponse:
    key = await require_scope(request, "render")
    return JSONResponse({"key_id": key.key_id})


async def whoami_in_browser(request: Request) -> JSONResponse:
    key = await require_scope(request, "render", basic=True)
    return JSONResponse({"key_id": key.key_id})


async def opentime_error(request: Request, exc: Exception) -> Response:
    # Mirrors app.app._opentime_error, plus the error's headers.
    assert isinstance(exc, HTTPError)
    return JSONResponse({"error": exc.message}, exc.status_code, headers=exc.headers)


def api_app(db_path: Path) -> Starlette:
    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[dict[str, FakeServices]]:
        store = SQLiteProfileStore(db_path)
        await store.open()
        try:
            yield {"services": FakeServices(store, ApiKeyCache())}
        finally:
            await store.close()

    return Starlette(
        routes=[Route("/api/whoami", whoami), Route("/browser/whoami", whoami_in_browser)],
        lifespan=lifespan,
        exception_handlers={HTTPError: opentime_error},
    )


@pytest.fixture
def keys(db_path: Path) -> dict[str, str]:
    async def make() -> dict[str, str]:
        store = SQLiteProfileStore(db_path)
        await store.open()
        try:
            made = {
                scope: (await create_key(store.api_keys, scope, [scope], NOW))[1]
                for scope in ("render", "tokens")
            }
            made["admin"] = (await create_key(store.api_keys, "admin", ["admin"], NOW))[1]
            revoked, made["revoked"] = await create_key(store.api_keys, "old", ["render"], NOW)
            await revoke_key(store.api_keys, revoked.key_id, NOW)
            return made
        finally:
            await store.close()

    return asyncio.run(make())


@pytest.fixture
def client(db_path: Path, keys: dict[str, str]) -> Iterator[TestClient]:
    with TestClient(api_app(db_path)) as test_client:
        yield test_client


def test_http_401_without_or_with_a_bad_key(client: TestClient, keys: dict[str, str]) -> None:
    bad_secret = keys["render"][:-3] + ("aaa" if not keys["render"].endswith("aaa") else "bbb")
    for headers, message in [
        ({}, "missing API key"),
        ({"Authorization": "Basic dXNlcjpwdw=="}, "missing API key"),
        ({"Authorization": "Bearer nope"}, "malformed API key"),
        ({"Authorization": f"Bearer {bad_secret}"}, "invalid API key"),
        ({"Authorization": f"Bearer {keys['revoked']}"}, "API key revoked"),
    ]:
        response = client.get("/api/whoami", headers=headers)
        assert response.status_code == 401, headers
        assert response.json()["error"].startswith(message)
        assert response.headers["www-authenticate"] == "Bearer"


def test_http_403_with_the_wrong_scope(client: TestClient, keys: dict[str, str]) -> None:
    response = client.get("/api/whoami", headers={"Authorization": f"Bearer {keys['tokens']}"})
    assert response.status_code == 403
    assert "render" in response.json()["error"] and "www-authenticate" not in response.headers


def test_http_200_with_the_scope_admin_or_x_api_key(client: TestClient, keys: dict[str, str]) -> None:
    for headers in [
        {"Authorization": f"Bearer {keys['render']}"},
        {"authorization": f"bearer {keys['admin']}"},
        {"X-API-Key": keys["render"]},
    ]:
        response = client.get("/api/whoami", headers=headers)
        assert response.status_code == 200, headers
        assert response.json()["key_id"] == parse_key(next(iter(headers.values())).split()[-1])[0]


def test_require_scope_rejects_undeclared_scopes() -> None:
    async def typo(request: Request) -> Response:
        await require_scope(request, "rendr")
        return Response()

    app = Starlette(routes=[Route("/api/typo", typo)])
    with TestClient(app) as client, pytest.raises(ValueError, match="unknown scope 'rendr'"):
        client.get("/api/typo")


def basic(password: str, user: str = "marketer") -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def test_basic_auth_password_is_the_key_where_allowed(client: TestClient, keys: dict[str, str]) -> None:
    for headers in [basic(keys["render"]), basic(keys["admin"], user=""), {"X-API-Key": keys["render"]}]:
        response = client.get("/browser/whoami", headers=headers)
        assert response.status_code == 200, headers
    assert client.get("/browser/whoami", headers=basic(keys["tokens"])).status_code == 403


def test_basic_auth_failures_challenge_the_browser(client: TestClient, keys: dict[str, str]) -> None:
    for headers, message in [
        ({}, "missing API key"),
        (basic(""), "missing API key"),
        (basic(keys["revoked"]), "API key revoked"),
        (basic("otk_nope"), "malformed API key"),
        ({"Authorization": "Basic %%%not-base64"}, "malformed API key"),
        ({"Authorization": "Basic " + base64.b64encode(b"\xff:\xfe").decode()}, "malformed API key"),
    ]:
        response = client.get("/browser/whoami", headers=headers)
        assert response.status_code == 401, headers
        assert response.json()["error"].startswith(message)
        assert response.headers["www-authenticate"] == 'Basic realm="Opentime preview"'


def test_api_endpoints_ignore_basic_auth(client: TestClient, keys: dict[str, str]) -> None:
    # A script's stray Basic credentials must not authenticate an API call, nor draw a browser prompt.
    response = client.get("/api/whoami", headers=basic(keys["render"]))
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
