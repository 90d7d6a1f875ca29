"""Rate limits for systems' endpoints: ``/api/*`` and the preview per API key, ``/webhooks/*`` per
webhook secret (after its signature is checked).

``rate`` is the pure arithmetic (GCRA, a token bucket written as one timestamp per key), ``local`` keeps
those timestamps in this process, ``limiter`` decides per scope with Redis shared by every node
(``app.shared.limits``) when ``redis_url`` is set, falling back to the local buckets when Redis does not
answer, and ``http`` is what the routes call and the 429 they answer. Open-time URLs (``/v1/...``) are
never rate-limited: mail proxies share addresses, and caches plus coalescing bound what one token costs.
"""
