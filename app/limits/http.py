"""The 429 every rate-limited endpoint answers, rendered by the app's handler for ``RateLimited``.

``{"error": "rate limit exceeded for this API key, retry in N s"}`` with ``Retry-After: N`` (whole
seconds, at least 1), ``Cache-Control: no-store`` and the ``RateLimit-Limit`` / ``-Remaining`` /
``-Reset`` headers of the IETF draft (the burst, 0, and whole seconds until the bucket is full).
"""

from __future__ import annotations

import math

import orjson
from starlette.requests import Request
from starlette.responses import Response

from app.content.cache_policy import NO_STORE_HEADERS
from app.limits.limiter import RateLimited
from app.limits.rate import Decision

# What the error message says is counted, per scope.
COUNTED_BY = {"api": "API key", "preview": "API key", "webhooks": "webhook secret"}


def limit_headers(decision: Decision) -> dict[str, str]:
    headers = {
        "ratelimit-limit": str(decision.limit),
        "ratelimit-remaining": str(decision.remaining),
        "ratelimit-reset": str(math.ceil(decision.reset)),
    }
    if not decision.allowed:
        headers["retry-after"] = str(retry_seconds(decision))
    return headers


def retry_seconds(decision: Decision) -> int:
    """Whole seconds to wait: rounded up (a client retrying on time must get through), at least 1."""
    return max(1, math.ceil(decision.retry_after - 1e-6))


def too_many_requests(scope: str, decision: Decision) -> Response:
    wait = retry_seconds(decision)
    message = f"rate limit exceeded for this {COUNTED_BY.get(scope, 'caller')}, retry in {wait} s"
    headers = {**NO_STORE_HEADERS, **limit_headers(decision)}
    return Response(orjson.dumps({"error": message}), 429, media_type="application/json", headers=headers)


async def rate_limited(request: Request, exc: Exception) -> Response:
    """The app's exception handler for ``RateLimited``."""
    assert isinstance(exc, RateLimited)
    return too_many_requests(exc.scope, exc.decision)
