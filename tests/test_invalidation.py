"""The local invalidation seam: listeners hear each change once, a broken one does not stop the rest."""

from __future__ import annotations

import asyncio

import pytest

from app.content.invalidation import LocalInvalidation


def test_listeners_hear_each_change_and_a_broken_one_is_contained(caplog: pytest.LogCaptureFixture) -> None:
    invalidation = LocalInvalidation()
    heard: list[frozenset[str]] = []

    def broken(recipients: frozenset[str]) -> None:
        raise RuntimeError("cache is broken")

    invalidation.subscribe(broken)
    invalidation.subscribe(heard.append)
    asyncio.run(invalidation.recipients_changed(["a", "b", "a"]))
    asyncio.run(invalidation.recipients_changed([]))  # nothing changed: nobody is called
    assert heard == [frozenset({"a", "b"})]
    assert "an invalidation listener failed" in caplog.text
