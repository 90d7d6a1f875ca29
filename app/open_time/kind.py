"""What an open-time kind declares: how it finds its block, renders, falls back.

The pipeline (``app.open_time.pipeline``) does everything that is the same for every kind; a kind
module (``app.open_time.kinds.*``) says only what differs. Most kinds serve content that degrades:
``DegradingKind`` gives them the one fallback rule (a bad token, an unknown block, an expired token
or a missing recipient each get the kind's fallback with the reason, never an error; a kind may
serve a block that is the same for everyone to an expired but authentic token: ``serves_expired``).
amp-form is the exception: a submission is refused with a 4xx, so it implements ``answer`` itself.
"""

from __future__ import annotations

from collections.abc import Awaitable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from app.asgi import Receive, Scope
from app.campaigns.loader import Campaign
from app.decisions.context import OpenContext
from app.decisions.decide import Decision
from app.open_time.reasons import Reason
from app.open_time.respond import Answer
from app.security.tokens import Claims

if TYPE_CHECKING:
    from app.services import Services


# Slotted dataclasses, not named tuples: on CPython 3.11 a named tuple's fields are read through a
# descriptor the interpreter does not specialise (callgrind: ~1.5k more instructions per warm open
# than slots for these three objects), and building one costs a Python-level __new__ as well.


@dataclass(slots=True)
class Target:
    """What an open-time URL names, parsed once by its route."""

    token: str
    block: str  # "" for the web view, which names no block
    fmt: str = ""  # image format: png, jpg or gif
    scale: int = 1
    slot: int = 0  # click-through: the item's position in the block


@dataclass(slots=True)
class Open:
    """One open-time request, after the token was checked."""

    services: Services
    scope: Scope
    receive: Receive
    target: Target
    claims: Claims | None  # None: the token is not ours; expired tokens keep their (authentic) claims
    now: float
    # The token's campaign: authentic with claims; without them, the campaign a bad token names, used
    # only to pick static, public fallback content. None when no campaign of ours is named.
    campaign: Campaign | None = None
    # Set by a kind whose block decided (app.open_time.deciding): what was shown, and the context read.
    decision: Decision[Any] | None = None
    context: OpenContext | None = None


class Kind(Protocol):
    name: str  # the ``kind`` label in metrics and logs

    def find(self, campaign: Campaign, block: str) -> Any | None:
        """The campaign's block of this kind by that name, or None."""

    def answer(self, request: Open, block: Any | None, problem: Reason | None) -> Answer | Awaitable[Answer]:
        """The answer, or an awaitable of it when the kind must wait (for data, a render, a body).

        ``problem`` is the token's (bad or expired); ``block`` is None when none was found.
        """


# An answer ready now (a fallback, a cache hit), or the work that will produce it. Returning the
# answer itself instead of always a coroutine saves the hot path a coroutine per layer: a warm
# amp-list open is answered without creating or awaiting any.
Reply = Answer | Awaitable[Answer]


class DegradingKind:
    """A kind whose every failure is its fallback content (200) with the reason."""

    name = ""
    missing = Reason.UNKNOWN_BLOCK  # the reason when the token names no block of this kind
    needs_recipient = True  # False: campaign-wide tokens get the content too

    def find(self, campaign: Campaign, block: str) -> Any | None:
        raise NotImplementedError

    def answer(self, request: Open, block: Any | None, problem: Reason | None) -> Reply:
        if block is None:
            return self.fallback(request, None, problem or self.missing)
        if problem is not None and not (problem is Reason.TOKEN_EXPIRED and self.serves_expired(block)):
            return self.fallback(request, block, problem)
        assert request.claims is not None  # a block is only found through claims
        if self.needs_recipient and request.claims.recipient is None:
            return self.fallback(request, block, Reason.NO_RECIPIENT)
        return self.render(request, block)

    def serves_expired(self, block: Any) -> bool:
        """True when ``block`` shows nothing personal, so an expired token (authentic: its claims were
        signed by a key still in the ring) may still get it. By default expired tokens get the fallback."""
        return False

    def fallback(self, request: Open, block: Any | None, reason: Reason) -> Answer:
        """The kind's static answer: the block's designed fallback, or a generic one without a block."""
        raise NotImplementedError

    def render(self, request: Open, block: Any) -> Reply:
        """The personal (or campaign-wide) content; it may itself degrade, with a reason."""
        raise NotImplementedError
