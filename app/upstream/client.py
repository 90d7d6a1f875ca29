"""Profiles pulled through from an upstream HTTP API, never later than the open-time budget.

The only module that imports httpx. Its errors are translated once, in ``_translated``, into::

    UpstreamError
    ├── UpstreamTimeout       connect/read timeout, or the total deadline ran out
    ├── UpstreamUnavailable   connection failure, 5xx, 429
    ├── UpstreamBadResponse   not JSON, not an object, too large, an unexpected status
    ├── UpstreamRejected      4xx other than 404/410/429 (401 even with a fresh token): fix the configuration
    ├── CircuitOpen           the breaker fails fast
    └── UpstreamOverloaded    ``max_fetches`` fetches already run: this one was not started

Layers, outermost first: ``lookup`` (the budget) → ``fetch`` (cache, stale-while-revalidate, negative
cache, coalescing) → ``_pull`` (breaker, total deadline, retries with backoff) → ``_attempt`` (token,
one GET, validation). Only timeouts and unavailability count as breaker failures: a bad body or a
rejected request is a fast answer from a live upstream.

Fetches running at once (distinct recipients, each until its total deadline) are bounded by
``max_fetches``: a hung upstream holds every one of them until the deadline, and without the bound every
cold open of a new recipient added one more (1,057 at once in one test). Beyond it a lookup is answered
at once ``overloaded`` and a stale entry is served without its refresh; both count in ``shed["full"]``.
"""

from __future__ import annotations

import asyncio
import base64
import email.utils
import logging
import math
import random
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, ClassVar, NamedTuple, Self
from urllib.parse import quote

import httpx
import orjson

from app.content.cache import BoundedCache, CacheStats
from app.errors import OpentimeError
from app.log_throttle import ThrottledLog
from app.upstream.breaker import CircuitBreaker

logger = logging.getLogger(__name__)

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]
NOT_FOUND = "upstream-not-found"
RETRYABLE_STATUS = frozenset({502, 503, 504})


@dataclass(frozen=True, slots=True)
class StaticHeaderAuth:
    """A fixed header on every request, e.g. ``Authorization: Bearer …`` or ``X-Api-Key: …``."""

    name: str
    value: str = field(repr=False)


@dataclass(frozen=True, slots=True)
class OAuth2ClientCredentials:
    """OAuth2 client-credentials grant; the client authenticates with HTTP Basic (RFC 6749 2.3.1)."""

    token_url: str
    client_id: str
    client_secret: str = field(repr=False)
    scope: str | None = None
    refresh_margin_s: float = 30.0  # refresh this long before expiry (at most half the token's lifetime)


@dataclass(frozen=True, slots=True)
class UpstreamConfig:
    """Everything the upstream client needs; times in seconds, sizes in bytes.

    A found profile is fresh for ``fresh_ttl_s``, then served stale (while one refresh runs) for
    ``stale_ttl_s`` more; a 404 is remembered for ``negative_ttl_s``.
    """

    url_template: str  # "https://crm.example.com/profiles/{recipient}"
    auth: StaticHeaderAuth | OAuth2ClientCredentials | None = None
    # Set from the upstream_* settings; their defaults live once, in app.config.
    connect_timeout_s: float = field(kw_only=True)
    read_timeout_s: float = field(kw_only=True)
    total_timeout_s: float = field(kw_only=True)
    retries: int = field(kw_only=True)
    fresh_ttl_s: float = field(kw_only=True)
    stale_ttl_s: float = field(kw_only=True)
    negative_ttl_s: float = field(kw_only=True)
    # Not settings: tuned here.
    backoff_base_s: float = 0.1
    backoff_cap_s: float = 2.0
    breaker_threshold: int = 5
    breaker_reset_s: float = 30.0
    max_response_bytes: int = 256 * 1024
    cache_max_bytes: int = 16 * 1024 * 1024
    max_connections: int = 100
    max_fetches: int = field(kw_only=True)  # fetches running at once (upstream_max_fetches)

    def __post_init__(self) -> None:
        http_url = self.url_template.startswith(("http://", "https://"))
        if "{recipient}" not in self.url_template or not http_url:
            raise ValueError("upstream url_template must be an http(s) URL containing {recipient}")
        if min(self.connect_timeout_s, self.read_timeout_s, self.total_timeout_s, self.backoff_base_s) <= 0:
            raise ValueError("upstream timeouts and backoff base must be > 0")
        if self.retries < 0 or self.backoff_cap_s < self.backoff_base_s:
            raise ValueError("upstream retries must be >= 0 and backoff cap >= backoff base")
        limits = (self.max_response_bytes, self.max_connections, self.max_fetches)
        if min(self.fresh_ttl_s, self.negative_ttl_s, *limits) <= 0:
            raise ValueError("upstream TTLs, response cap, connection and fetch limits must be > 0")
        if self.stale_ttl_s < 0:
            raise ValueError("upstream stale_ttl_s must be >= 0")

    def url_for(self, recipient: str) -> str:
        """The profile URL; ``.`` is encoded too, or a recipient id ``..`` would be a dot segment that the
        URL parser resolves (``https://crm/profiles/..`` is ``https://crm/``): a credentialed request to
        another resource of the upstream."""
        return self.url_template.replace("{recipient}", quote(recipient, safe="").replace(".", "%2E"))


class UpstreamError(OpentimeError):
    """The upstream did not give a usable answer; ``reason`` is the fallback reason to report."""

    reason: ClassVar[str] = "upstream-error"
    breaker_failure: ClassVar[bool] = False

    def __init__(self, message: str, *, retryable: bool = False, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.retry_after = retry_after


class UpstreamTimeout(UpstreamError):
    reason = "upstream-timeout"
    breaker_failure = True


class UpstreamUnavailable(UpstreamError):
    reason = "upstream-unavailable"
    breaker_failure = True


class UpstreamBadResponse(UpstreamError):
    reason = "upstream-bad-response"


class UpstreamRejected(UpstreamError):
    reason = "upstream-rejected"


class CircuitOpen(UpstreamError):
    reason = "circuit-open"


class UpstreamOverloaded(UpstreamError):
    reason = "overloaded"


class UpstreamResult(NamedTuple):
    """Found (``attributes``: an encoded JSON object), not found (both None), or failed (``error``)."""

    attributes: bytes | None = None
    error: UpstreamError | None = None
    fetched_at: float | None = None  # client clock when the data left the upstream (data age)
    stale: bool = False  # served from cache past its fresh TTL while a refresh runs

    @property
    def reason(self) -> str | None:
        if self.attributes is not None:
            return None
        return NOT_FOUND if self.error is None else self.error.reason


class _Reply(NamedTuple):
    status: int
    retry_after: float | None
    body: bytes  # read (up to the cap) only for 200


class _Entry(NamedTuple):
    fetched_at: float
    attributes: bytes | None  # None: the upstream said 404


@contextmanager
def _translated() -> Iterator[None]:
    """The one place httpx errors become ours."""
    try:
        yield
    except httpx.TimeoutException as exc:
        raise UpstreamTimeout(f"{type(exc).__name__}: {exc}", retryable=True) from exc
    except httpx.TransportError as exc:
        raise UpstreamUnavailable(f"{type(exc).__name__}: {exc}", retryable=True) from exc
    except httpx.HTTPError as exc:
        raise UpstreamBadResponse(f"{type(exc).__name__}: {exc}") from exc


class UpstreamClient:
    """Pull-through profile client owning one ``httpx.AsyncClient``; use ``async with`` or ``aclose``."""

    def __init__(
        self,
        config: UpstreamConfig,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        clock: Clock = time.monotonic,
        sleep: Sleep = asyncio.sleep,
        rng: Callable[[], float] = random.random,
    ) -> None:
        self._config = config
        self._clock = clock
        self._sleep = sleep
        self._rng = rng
        timeout = httpx.Timeout(config.read_timeout_s, connect=config.connect_timeout_s)
        self._http = httpx.AsyncClient(
            transport=transport,
            timeout=timeout,
            limits=httpx.Limits(max_connections=config.max_connections),
            headers={"Accept": "application/json", "User-Agent": "opentime"},
            follow_redirects=False,
            trust_env=False,
        )
        # Requests wait for a connection here, not in httpcore's pool: its queue is rescanned against every
        # connection on each request and cancellation, which stalls the event loop for hundreds of ms once
        # a hanging upstream holds every connection and requests pile up (bench/upstream_budget.py).
        self._slots = asyncio.Semaphore(config.max_connections)
        self.breaker = CircuitBreaker(config.breaker_threshold, config.breaker_reset_s, clock=clock)
        self._warnings = ThrottledLog(logger)
        self._cache: BoundedCache[str, _Entry] = BoundedCache(
            config.cache_max_bytes, size_of=_entry_size, clock=clock
        )
        self._tokens: _TokenSource | None = None
        if isinstance(config.auth, OAuth2ClientCredentials):
            self._tokens = _TokenSource(config.auth, self._http, self._send, clock)
        self._inflight: dict[str, asyncio.Task[UpstreamResult]] = {}
        self._invalidated: set[str] = set()  # changed while being fetched: answer, but don't cache
        self.shed: Counter[str] = Counter(full=0)  # fetches not started, by reason

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        tasks: list[asyncio.Task[Any]] = [*self._inflight.values()]
        if self._tokens is not None:
            tasks.extend(self._tokens.pending())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self._http.aclose()

    async def fetch(self, recipient: str) -> UpstreamResult:
        """From cache when fresh (or stale, refreshing in the background), else one shared upstream call."""
        result = self._cached(recipient)
        if result is not None:
            return result
        task = self._refresh(recipient)
        if task is None:
            return UpstreamResult(error=UpstreamOverloaded("too many upstream fetches are running"))
        return await asyncio.shield(task)

    @property
    def fetches_in_flight(self) -> int:
        return len(self._inflight)

    @property
    def max_fetches(self) -> int:
        return self._config.max_fetches

    @property
    def cache_stats(self) -> CacheStats:
        return self._cache.stats

    def discard_all(self) -> None:
        """Forget every recipient (changes may have been missed); fetches running now won't be cached."""
        self._cache.clear()
        self._invalidated.update(self._inflight)

    def discard(self, recipient: str) -> None:
        """Forget the recipient (their profile changed); a fetch already running won't be cached."""
        self._cache.discard(recipient)
        if recipient in self._inflight:
            self._invalidated.add(recipient)

    def _cached(self, recipient: str) -> UpstreamResult | None:
        entry = self._cache.get(recipient)
        if entry is None:
            return None
        stale = entry.attributes is not None and self._clock() - entry.fetched_at >= self._config.fresh_ttl_s
        if stale:
            self._refresh(recipient)
        return UpstreamResult(entry.attributes, None, entry.fetched_at, stale)

    def _refresh(self, recipient: str) -> asyncio.Task[UpstreamResult] | None:
        """The recipient's fetch, started unless one runs; None when ``max_fetches`` run already."""
        task = self._inflight.get(recipient)
        if task is None:
            if len(self._inflight) >= self._config.max_fetches:
                self.shed["full"] += 1
                return None
            task = self._inflight[recipient] = asyncio.create_task(self._pull_and_store(recipient))
            task.add_done_callback(lambda _: self._settled(recipient))
        return task

    def _settled(self, recipient: str) -> None:
        del self._inflight[recipient]
        self._invalidated.discard(recipient)

    async def _pull_and_store(self, recipient: str) -> UpstreamResult:
        result = await self._pull(recipient)
        if result.error is None and recipient not in self._invalidated:
            ttl = self._ttl(found=result.attributes is not None)
            fetched_at = self._clock() if result.fetched_at is None else result.fetched_at
            self._cache.set(recipient, _Entry(fetched_at, result.attributes), ttl)
        return result

    def _ttl(self, *, found: bool) -> float:
        config = self._config
        return config.fresh_ttl_s + config.stale_ttl_s if found else config.negative_ttl_s

    async def _pull(self, recipient: str) -> UpstreamResult:
        """One logical fetch: breaker, total deadline, retries; failures become a result, not a raise."""
        if not self.breaker.allow():
            return UpstreamResult(error=CircuitOpen("upstream circuit is open"))
        try:
            async with asyncio.timeout(self._config.total_timeout_s):
                result = await self._retrying(recipient)
        except TimeoutError:
            error: UpstreamError = UpstreamTimeout("upstream total deadline exceeded")
        except UpstreamError as exc:
            error = exc
        else:
            self.breaker.record_success()
            return result
        if error.breaker_failure:
            self.breaker.record_failure()
        else:
            self.breaker.record_success()
        self._warnings.warning(error.reason, "upstream profile fetch failed (%s): %s", error.reason, error)
        return UpstreamResult(error=error)

    async def _retrying(self, recipient: str) -> UpstreamResult:
        deadline = self._clock() + self._config.total_timeout_s
        attempt = 0
        while True:
            try:
                return await self._attempt(recipient)
            except UpstreamError as exc:
                delay = self._backoff(attempt, exc)
                if not exc.retryable or attempt >= self._config.retries or self._clock() + delay >= deadline:
                    raise
            attempt += 1
            await self._sleep(delay)

    def _backoff(self, attempt: int, exc: UpstreamError) -> float:
        """Full jitter (a random delay up to the exponential step), or the server's Retry-After, capped."""
        cap = self._config.backoff_cap_s
        if exc.retry_after is not None:
            return min(exc.retry_after, cap)
        return self._rng() * min(cap, self._config.backoff_base_s * 2.0**attempt)

    async def _attempt(self, recipient: str) -> UpstreamResult:
        url = self._config.url_for(recipient)
        token = await self._tokens.get() if self._tokens is not None else None
        reply = await self._get(url, token)
        if reply.status == 401 and self._tokens is not None and token is not None:
            self._tokens.invalidate(token)
            reply = await self._get(url, await self._tokens.get())
        if reply.status == 200:
            return UpstreamResult(_json_object(reply.body), fetched_at=self._clock())
        if reply.status in (404, 410):
            return UpstreamResult(fetched_at=self._clock())
        raise _status_error(reply, "profile")

    async def _get(self, url: str, token: str | None) -> _Reply:
        headers = {}
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        elif isinstance(self._config.auth, StaticHeaderAuth):
            headers[self._config.auth.name] = self._config.auth.value
        return await self._send(self._http.build_request("GET", url, headers=headers))

    async def _send(self, request: httpx.Request) -> _Reply:
        async with self._slots:
            return await _send(self._http, request, self._config.max_response_bytes)


class _TokenSource:
    """The OAuth2 access token: cached until shortly before expiry, one refresh shared by all waiters."""

    def __init__(
        self,
        creds: OAuth2ClientCredentials,
        http: httpx.AsyncClient,
        send: Callable[[httpx.Request], Awaitable[_Reply]],
        clock: Clock,
    ) -> None:
        self._creds = creds
        self._http = http
        self._send = send
        self._clock = clock
        self._token: str | None = None
        self._refresh_at = 0.0
        self._refreshing: asyncio.Task[str] | None = None

    async def get(self) -> str:
        if self._token is not None and self._clock() < self._refresh_at:
            return self._token
        if self._refreshing is None:
            self._refreshing = asyncio.create_task(self._request())
            self._refreshing.add_done_callback(self._done)
        return await asyncio.shield(self._refreshing)

    def invalidate(self, token: str) -> None:
        """The upstream refused ``token``; only the first of many concurrent 401s drops it."""
        if self._token == token:
            self._token = None

    def pending(self) -> list[asyncio.Task[str]]:
        return [] if self._refreshing is None else [self._refreshing]

    def _done(self, task: asyncio.Task[str]) -> None:
        self._refreshing = None
        if not task.cancelled():
            task.exception()  # retrieved: every waiter may have given up

    async def _request(self) -> str:
        creds = self._creds
        form = {"grant_type": "client_credentials"}
        if creds.scope:
            form["scope"] = creds.scope
        basic = base64.b64encode(f"{creds.client_id}:{creds.client_secret}".encode()).decode()
        headers = {"Authorization": f"Basic {basic}"}
        request = self._http.build_request("POST", creds.token_url, data=form, headers=headers)
        reply = await self._send(request)
        if reply.status != 200:
            raise _status_error(reply, "token")
        data = orjson.loads(_json_object(reply.body))
        token, expires_in = data.get("access_token"), _expires_in(data.get("expires_in", 3600))
        if not isinstance(token, str) or not token or expires_in is None:
            raise UpstreamBadResponse("token response lacks access_token or a numeric expires_in")
        margin = min(creds.refresh_margin_s, expires_in / 2)
        self._token, self._refresh_at = token, self._clock() + expires_in - margin
        return token


def _expires_in(value: object) -> float | None:
    """Seconds a token lives, at least 1: some servers send a numeric string, or 0 or less (a token of 0 s
    would be refreshed before every request). None when it is not a finite number."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return None
    try:
        seconds = float(value)
    except (ValueError, OverflowError):
        return None
    return max(seconds, 1.0) if math.isfinite(seconds) else None


async def _send(http: httpx.AsyncClient, request: httpx.Request, cap: int) -> _Reply:
    """Send one request; the body of a 200 is read up to ``cap`` bytes, other bodies are not read."""
    with _translated():
        response = await http.send(request, stream=True)
        try:
            if response.status_code != 200:
                return _Reply(response.status_code, _retry_after(response.headers.get("retry-after")), b"")
            length = response.headers.get("content-length", "")
            if length.isdigit() and int(length) > cap:
                raise UpstreamBadResponse(f"upstream response of {length} bytes exceeds {cap}")
            body = bytearray()
            async for chunk in response.aiter_bytes():
                body += chunk
                if len(body) > cap:
                    raise UpstreamBadResponse(f"upstream response exceeds {cap} bytes")
            return _Reply(200, None, bytes(body))
        finally:
            await response.aclose()


def _status_error(reply: _Reply, what: str) -> UpstreamError:
    status = reply.status
    message = f"upstream {what} endpoint answered {status}"
    if status >= 500 or status == 429:
        retryable = status in RETRYABLE_STATUS
        return UpstreamUnavailable(message, retryable=retryable, retry_after=reply.retry_after)
    if 400 <= status < 500:
        return UpstreamRejected(message)
    return UpstreamBadResponse(message)


def _json_object(body: bytes) -> bytes:
    """The body re-encoded compactly, if it is a JSON object."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise UpstreamBadResponse(f"upstream response is not JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise UpstreamBadResponse(f"upstream response is a JSON {type(data).__name__}, not an object")
    return orjson.dumps(data)


def _retry_after(value: str | None) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds or an HTTP date); None when absent or bad."""
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _entry_size(entry: _Entry) -> int:
    return len(entry.attributes or b"")
