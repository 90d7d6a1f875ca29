"""Why an open-time answer is not the recipient's personal content: one vocabulary for every kind.

The value is what the ``X-Opentime-Fallback`` header and the ``outcome`` label of
``opentime_open_responses_total`` carry. ``Reason`` is a ``StrEnum``, so a member is also the plain
string other layers (tokens, the upstream client) report; ``reason_of`` maps those strings once, at
the pipeline's edge.
"""

from __future__ import annotations

from enum import StrEnum


class Reason(StrEnum):
    # The URL's token (app.security.tokens); codes, not secrets
    TOKEN_INVALID = "token-invalid"  # noqa: S105
    TOKEN_MALFORMED = "token-malformed"  # noqa: S105
    TOKEN_UNKNOWN_KEY = "token-unknown-key"  # noqa: S105
    TOKEN_BAD_SIGNATURE = "token-bad-signature"  # noqa: S105
    TOKEN_NOT_YET_VALID = "token-not-yet-valid"  # noqa: S105
    TOKEN_EXPIRED = "token-expired"  # noqa: S105
    # What the token names
    UNKNOWN_BLOCK = "unknown-block"
    UNKNOWN_CAMPAIGN = "unknown-campaign"
    NO_RECIPIENT = "no-recipient"
    # The recipient's data
    UNKNOWN_RECIPIENT = "unknown-recipient"
    NO_DATA = "no-data"
    BAD_PROFILE = "bad-profile"
    NO_DEADLINE = "no-deadline"
    BUDGET_EXCEEDED = "budget-exceeded"
    STORE_ERROR = "store-error"
    # The upstream profile API (app.upstream.client)
    UPSTREAM_ERROR = "upstream-error"
    UPSTREAM_TIMEOUT = "upstream-timeout"
    UPSTREAM_UNAVAILABLE = "upstream-unavailable"
    UPSTREAM_BAD_RESPONSE = "upstream-bad-response"
    UPSTREAM_REJECTED = "upstream-rejected"
    CIRCUIT_OPEN = "circuit-open"
    # Too much work queued already (store reads, renders, upstream fetches): none was queued for this
    OVERLOADED = "overloaded"
    # Rendering
    RENDER_ERROR = "render-error"
    RENDER_QUEUE_FULL = "render-queue-full"  # image_render_queue renders waiting already: refused at once
    TOO_LARGE = "too-large"
    INTERNAL_ERROR = "internal-error"
    # amp-form: a submission refused with a 4xx (bad fields, size or type); nothing was stored
    INVALID_SUBMISSION = "invalid-submission"


def reason_of(code: str) -> Reason:
    """The member for a code another layer reported; an unknown code is an internal error (and a bug)."""
    try:
        return Reason(code)
    except ValueError:
        return Reason.INTERNAL_ERROR
