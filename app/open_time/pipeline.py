"""The one open-time pipeline: ``/v1/{token}/{kind}/{block}`` parsed once → token → block → kind → answer.

Built for tens of thousands of requests a second on one core: a plain ASGI callable per URL segment
(no Request/Response objects, no router), the path split once, pre-encoded headers, and a cache hit
answered without awaiting anything. Every kind gets the same rules here: the token check (bad and
expired are told apart; expired claims still name the campaign's fallback), the block lookup, one
metrics call (``opentime_open_responses_total{kind,outcome}`` and the data-age histogram), one
last line of defence (an unexpected error is logged and answered with the kind's fallback, never a
500 and never a redirect, since a mail client shows a broken block for either) and one way of
sending (``app.open_time.respond``). Only a URL that is not an open-time URL at all, or a wrong
method, gets a 4xx JSON error.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from app.asgi import Headers, Receive, Scope, Send
from app.campaigns.loader import Campaign
from app.open_time.kind import Kind, Open, Target
from app.open_time.reasons import Reason, reason_of
from app.open_time.respond import Answer, send_answer, send_error
from app.security.amp_cors import CORS_HEADERS
from app.security.tokens import Claims, TokenError, TokenExpired

if TYPE_CHECKING:
    from app.services import Services

logger = logging.getLogger(__name__)

Parser = Callable[[list[str]], Target | None]


@dataclass(frozen=True, slots=True)
class Route:
    """One URL segment (``list``, ``img``, ...): its URL shape, methods, and the kinds served there."""

    segment: str
    parse: Parser  # the split path → Target, or None when the URL is not of this route's shape
    usage: str  # the expected URL, for the 404 message
    kinds: Sequence[Kind]  # tried in order to find the block; the last one answers when none has it
    methods: tuple[str, ...] = ("GET", "HEAD")
    cors: bool = False  # behind the AMP CORS middleware (amp-list, amp-form)


class OpenTimeEndpoint:
    """The ASGI callable for one route; the AMP CORS middleware (if any) has run before it."""

    def __init__(self, route: Route) -> None:
        self.route = route
        self._not_allowed = f"use {route.methods[0]}"
        self._allow = (b"allow", ", ".join(route.methods).encode())

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        route = self.route
        extra: Headers = scope.get(CORS_HEADERS, ())
        target = route.parse(scope["path"].split("/"))
        if target is None:
            await send_error(send, 404, f"not an open-time URL: expected {route.usage}", extra)
            return
        method = scope["method"]
        if method not in route.methods:
            message = f"method {method} not allowed: {self._not_allowed}"
            await send_error(send, 405, message, (*extra, self._allow))
            return
        services: Services = scope["state"]["services"]
        kind, answer = await self._answer(services, scope, receive, target)
        services.open_stats.served(kind.name, answer.reason, answer.age)
        await send_answer(send, scope, answer, extra)

    async def _answer(
        self, services: Services, scope: Scope, receive: Receive, target: Target
    ) -> tuple[Kind, Answer]:
        kind = self.route.kinds[-1]
        try:
            now = services.clock()
            claims, problem = _verify(services, target.token, now)
            request = Open(services, scope, receive, target, claims, now)
            kind, block = self._find(services.campaigns, claims, target.block)
            return kind, await kind.answer(request, block, problem)
        except Exception:
            # Last line of defence: the email must still get a well-formed answer of its kind.
            logger.exception("open-time %s request failed", kind.name)
            request = Open(services, scope, receive, target, None, services.clock())
            return kind, await kind.answer(request, None, Reason.INTERNAL_ERROR)

    def _find(self, campaigns: Mapping[str, Campaign], claims: Claims | None, name: str) -> tuple[Kind, Any]:
        kinds = self.route.kinds
        campaign = None if claims is None else campaigns.get(claims.campaign)
        if campaign is not None:
            for kind in kinds:
                block = kind.find(campaign, name)
                if block is not None:
                    return kind, block
        return kinds[-1], None


def _verify(services: Services, token: str, now: float) -> tuple[Claims | None, Reason | None]:
    """Valid claims; or the authentic claims of an expired token and why; or no claims and why."""
    try:
        return services.verifier.verify(token, now=int(now)), None
    except TokenExpired as exc:
        return exc.claims, reason_of(exc.reason)
    except TokenError as exc:
        return None, reason_of(exc.reason)


async def not_found(scope: Scope, receive: Receive, send: Send) -> None:
    await send_error(
        send, 404, "not an open-time URL: expected /v1/{token}/{list|html|img|form}/{block} or /view"
    )
