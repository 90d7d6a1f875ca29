"""The upstream profile API: the httpx client (the only module that imports httpx) and its breaker."""
