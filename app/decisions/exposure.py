"""What one answered open or click showed, handed to a sink that records it (reports are built from them).

The open-time pipeline calls ``services.exposures.record(...)`` once per answered open and once per click.
``record`` is synchronous and must not block: a sink queues (and may sample or drop) and writes elsewhere,
so the hot path pays one call. The default sink, ``NullSink``, records nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol

Event = Literal["open", "click"]
DEFAULT_VARIANT = "default"  # the variant name of a block without variants, or when no rule matched


@dataclass(slots=True)  # not frozen: one is built per open, and frozen init costs ~0.7 µs more
class Exposure:
    """One open (or click) of one block: what the reader was shown, and to whom it was shown (by class).

    ``variant``: the variant shown (``"default"`` when the block has none or nothing chose one);
    ``experiment``: the experiment that chose it, None when a rule (or the default) did; the holdout is
    the variant ``"holdout"`` of that experiment. ``fetch_class``: ``app.open_time.fetch_class`` names
    (``direct``, ``gmail-proxy``, ``apple-mpp``, ``yahoo-proxy``, ``other-proxy``, ``scanner``).
    ``outcome``: ``"ok"`` when personalized, else the fallback reason (``app.open_time.reasons.Reason``
    values). ``kind``: the open-time kind's name (``list``, ``image``, ``countdown``, ``fragment``,
    ``view``, ``click``; amp-form submissions are not offered). ``block``: the URL's block name
    (``""`` for the web view). ``at``: Unix time of the open. No recipient id: an exposure carries no
    personal data.
    """

    campaign: str
    block: str
    variant: str
    experiment: str | None
    fetch_class: str
    outcome: str
    kind: str
    event: Event
    at: float


class ExposureSink(Protocol):
    """Where exposures go. ``record`` is called on the hot path: it must return at once, never raise."""

    def record(self, exposure: Exposure) -> None: ...


class NullSink:
    """The default sink: exposures are not recorded."""

    def record(self, exposure: Exposure) -> None:
        return None
