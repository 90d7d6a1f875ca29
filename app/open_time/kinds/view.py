"""The web view ("view in browser"): ``/v1/{token}/view``, the campaign's HTML part as of this moment.

Personal: ``email.html`` rendered with the recipient's data at the moment of opening (within a
second; a late or missing profile renders with no data and says why). After the token expired (it is
still authentic): the campaign's non-personal version, the HTML part rendered with no recipient and
no data, so a link followed months later still shows the email. Otherwise (a bad token, an unknown
campaign): a page that says the email is not available. The view re-uses the presented token for
its links: it never mints one (its images then answer their designed fallbacks once it expired).
"""

from __future__ import annotations

from typing import Any

from app.campaigns.loader import Campaign
from app.decisions.context import OpenContext
from app.open_time.deciding import open_context
from app.open_time.kind import DegradingKind, Open, Target
from app.open_time.reasons import Reason
from app.open_time.respond import HTML_HEADERS, Answer

UNAVAILABLE_PAGE = (
    b"<!doctype html><html lang=en><head><meta charset=utf-8><title>Email unavailable</title></head>"
    b"<body><p>This email is no longer available online.</p></body></html>"
)
VIEW_BUDGET_S = 1.0


class ViewKind(DegradingKind):
    name = "view"
    missing = Reason.UNKNOWN_CAMPAIGN

    def find(self, campaign: Campaign, block: str) -> Campaign | None:
        return campaign if campaign.has_email else None

    def fallback(self, request: Open, block: Campaign | None, reason: Reason) -> Answer:
        if block is None or reason is not Reason.TOKEN_EXPIRED:
            return Answer(UNAVAILABLE_PAGE, reason, HTML_HEADERS)
        return Answer(_html(request, block, "", None), reason, HTML_HEADERS)

    async def render(self, request: Open, block: Campaign) -> Answer:
        services, claims = request.services, request.claims
        assert claims is not None and claims.recipient is not None
        attributes, reason = await services.lists.profile(claims.recipient, VIEW_BUDGET_S)
        opened = open_context(request, attributes or {})
        return Answer(_html(request, block, claims.recipient, attributes, opened), reason, HTML_HEADERS)


def _html(
    request: Open,
    campaign: Campaign,
    recipient: str,
    attributes: dict[str, Any] | None,
    opened: OpenContext | None = None,
) -> bytes:
    """The HTML part with the presented token in its links; no recipient and no data for the
    non-personal version. ``opened``: the open's context, so its variants are the open's."""
    services = request.services
    context = services.sendtime.context(
        campaign, recipient, attributes, token=request.target.token, opened=opened
    )
    return services.templates.render(campaign.template("email.html"), context).encode()


def parse(parts: list[str]) -> Target | None:
    return Target(parts[2], "") if len(parts) == 4 else None
