"""The Redis shared tier: the only package that imports ``redis`` and ``aiocache``.

With ``redis_url`` set, the processes of every node share, through one Redis:

- profiles (``profiles.SharedProfiles``): asked on a local miss before the store, filled after a store read;
- invalidation (``invalidation.RedisInvalidation``): a writer tombstones the changed profiles and
  publishes their ids; every process drops its local caches for them;
- the webhook replay guard (``replay.SharedReplayGuard``): one signed request is accepted once anywhere.

Every Redis call goes through ``client.SharedRedis``: a short deadline, a circuit breaker and counters
for ``/metrics``. Redis is an optimisation: when it is down every answer still comes from the local
caches and the store. Without ``redis_url`` nothing here is built and nothing here runs.
"""
