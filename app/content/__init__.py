"""Open-time content: caches, the cache policy, and the list and image content services."""
