"""Warnings that repeat once per request during an outage, logged at most once per interval per kind.

When the store or the upstream is down, every open fails the same way: thousands of identical lines
a second would hide everything else and cost real time on the hot path. The first occurrence is
logged at once; later ones within the interval are counted and reported with the next line. The
kinds must come from a bounded set (never from a URL as given): one entry is kept per kind.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Hashable, Mapping


class ThrottledLog:
    def __init__(
        self, logger: logging.Logger, *, interval_s: float = 10.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._logger = logger
        self._interval = interval_s
        self._clock = clock
        self._last: dict[Hashable, float] = {}
        self._suppressed: dict[Hashable, int] = {}

    def warning(
        self, kind: Hashable, message: str, *args: object, exc_info: BaseException | None = None
    ) -> None:
        self.log(logging.WARNING, kind, message, *args, exc_info=exc_info)

    def log(
        self,
        level: int,
        kind: Hashable,
        message: str,
        *args: object,
        exc_info: BaseException | None = None,
        extra: Mapping[str, object] | None = None,
    ) -> None:
        now = self._clock()
        last = self._last.get(kind)
        if last is not None and now - last < self._interval:
            self._suppressed[kind] = self._suppressed.get(kind, 0) + 1
            return
        self._last[kind] = now
        suppressed = self._suppressed.pop(kind, 0)
        if suppressed:
            message += f" (and {suppressed} more like it in the last {self._interval:g} s)"
        if extra is not None:
            extra = {**extra, "suppressed": suppressed}
        self._logger.log(level, message, *args, exc_info=exc_info, extra=extra)
