"""One log line per kind of open-time fallback and block, at most once per interval.

An open answered with a fallback is counted in the metrics (``outcome``); this says in the log which
reason hit which block, so an operator sees "campaign spring, block picks: store-error" without a
line per open. The line carries the open's request id (``app.logs``; made only when a line is
written), which the open's answer then names in ``X-Request-Id``. The key is (reason, kind,
campaign, block), each from a bounded set: the campaign and block are the configured ones the
request resolved to (``-`` when none), never a name as the URL gave it, so a flood of made-up URLs
cannot grow the throttle's table. Never the recipient, never the token.

Reasons that say something is wrong on our side (store, upstream, budget, render) are warnings;
those that are the request's own (a bad or expired token, an unknown recipient) are info.
"""

from __future__ import annotations

import logging
from typing import Any

from app.asgi import Scope
from app.campaigns.loader import Campaign
from app.log_throttle import ThrottledLog
from app.logs import assigned, enter
from app.open_time.reasons import Reason

INTERVAL_S = 60.0
# The request's own doing, or ordinary life (tokens expire, recipients unsubscribe).
_EXPECTED = frozenset(
    {
        Reason.TOKEN_INVALID,
        Reason.TOKEN_MALFORMED,
        Reason.TOKEN_UNKNOWN_KEY,
        Reason.TOKEN_BAD_SIGNATURE,
        Reason.TOKEN_NOT_YET_VALID,
        Reason.TOKEN_EXPIRED,
        Reason.UNKNOWN_BLOCK,
        Reason.UNKNOWN_CAMPAIGN,
        Reason.NO_RECIPIENT,
        Reason.UNKNOWN_RECIPIENT,
        Reason.NO_DATA,
        Reason.NO_DEADLINE,
        Reason.INVALID_SUBMISSION,
    }
)


class FallbackLog:
    def __init__(self, logger: logging.Logger, *, interval_s: float = INTERVAL_S, **throttle: Any) -> None:
        self._log = ThrottledLog(logger, interval_s=interval_s, **throttle)

    def fallback(
        self, request: Scope, reason: str, kind: str, campaign: Campaign | None, block: Any | None
    ) -> bytes | None:
        """Log (or count) a fallback of the open ``request``; its request id if a line was written."""
        enter(request)  # only now, off the path of personal answers: the line's request id
        campaign_name = "-" if campaign is None else campaign.name
        block_name = "-" if block is None else str(block.name)
        level = logging.INFO if reason in _EXPECTED else logging.WARNING
        fields = {"reason": reason, "kind": kind, "campaign": campaign_name, "block": block_name}
        self._log.log(
            level,
            (reason, kind, campaign_name, block_name),
            "open-time fallback %s: %s block %s/%s",
            reason,
            kind,
            campaign_name,
            block_name,
            extra=fields,
        )
        return assigned(request)

    def failed(
        self, request: Scope, exc: BaseException, kind: str, campaign: Campaign | None, block: Any | None
    ) -> None:
        """An unexpected error on the open-time path (a bug): its traceback, once per interval."""
        enter(request)
        campaign_name = "-" if campaign is None else campaign.name
        block_name = "-" if block is None else str(block.name)
        self._log.log(
            logging.ERROR,
            ("error", kind, campaign_name, block_name, type(exc)),
            "open-time %s request failed: block %s/%s",
            kind,
            campaign_name,
            block_name,
            exc_info=exc,
            extra={"kind": kind, "campaign": campaign_name, "block": block_name},
        )
