"""Reading ``/metrics`` text in tests."""

from __future__ import annotations

import re


def sample(text: str, name: str, **labels: str) -> float:
    """One sample of ``/metrics`` text: ``name`` with exactly ``labels`` (none: the bare name)."""
    inside = ",".join(f'{key}="{value}"' for key, value in labels.items())
    pattern = "^" + re.escape(f"{name}{{{inside}}}" if labels else name) + r" (\S+)$"
    match = re.search(pattern, text, re.MULTILINE)
    assert match is not None, f"no {name} {labels} in /metrics"
    return float(match.group(1))
