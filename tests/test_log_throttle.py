from __future__ import annotations

import logging

import pytest

from app.log_throttle import ThrottledLog


def test_repeats_within_the_interval_are_counted_not_logged(caplog: pytest.LogCaptureFixture) -> None:
    now = [100.0]
    log = ThrottledLog(logging.getLogger("t"), interval_s=10, clock=lambda: now[0])
    with caplog.at_level(logging.WARNING, logger="t"):
        for _ in range(5):
            log.warning("store", "store down: %s", "x")
        log.warning("upstream", "upstream down")
        now[0] += 11
        log.warning("store", "store down: %s", "y")
    assert [r.getMessage() for r in caplog.records] == [
        "store down: x",
        "upstream down",
        "store down: y (and 4 more like it in the last 10 s)",
    ]
