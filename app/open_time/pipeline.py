"""The one open-time pipeline: ``/v1/{token}/{kind}/{block}`` parsed once → token → block → kind → answer.

Built for tens of thousands of requests a second on one core: a plain ASGI callable per URL segment
(no Request/Response objects, no router), the path split once, pre-encoded headers, and a cache hit
answered without awaiting anything. Every kind gets the same rules here: the token check (bad and
expired are told apart; expired claims still name the campaign's fallback), the block lookup, one
metrics call (``opentime_open_responses_total{kind,outcome}``, the data-age and duration histograms), one
last line of defence (an unexpected error is logged and answered with the kind's fallback, never a
500 and never a redirect, since a mail client shows a broken block for either) and one way of
sending (``app.open_time.respond``). Only a URL that is not an open-time URL at all, or a wrong
method, gets a 4xx JSON error.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from time import perf_counter
from typing import TYPE_CHECKING, Any

from app.asgi import Headers, Receive, Scope, Send
from app.campaigns.loader import Campaign
from app.decisions.exposure import DEFAULT_VARIANT, Exposure, NullSink
from app.logs import HEADER as REQUEST_ID_HEADER
from app.methods import allow_header
from app.open_time.deciding import fetch_class_of
from app.open_time.fallback_log import FallbackLog
from app.open_time.kind import Kind, Open, Target
from app.open_time.reasons import Reason, reason_of
from app.open_time.respond import Answer, send_answer, send_error
from app.security.amp_cors import SenderPolicy, answered_here, decide
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
    cors: bool = False  # AMP CORS (amp-list, amp-form): foreign senders get a 403, preflights a 204


class OpenTimeEndpoint:
    """The ASGI callable for one route."""

    def __init__(self, route: Route, senders: SenderPolicy) -> None:
        self.route = route
        self._senders = senders if route.cors else None
        self._not_allowed = f"use {route.methods[0]}"
        # A CORS route also answers OPTIONS (the AMP CORS preflight): a method it allows.
        allowed = (*route.methods, "OPTIONS") if route.cors else route.methods
        self._allow = (b"allow", allow_header(allowed).encode())
        self._only = route.kinds[0] if len(route.kinds) == 1 else None
        self._fallbacks = FallbackLog(logger)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.serve(scope, receive, send, scope["path"].split("/"))

    async def serve(self, scope: Scope, receive: Receive, send: Send, parts: list[str]) -> None:
        """Answer one request; ``parts`` is its path split at "/" (the app's dispatcher splits it once)."""
        started = perf_counter()  # monotonic, ~50 ns: the open's duration, waiting for data included
        route = self.route
        extra: Headers = ()
        if self._senders is not None:
            # AMP CORS first, the cheapest check: a foreign sender learns nothing, a form stores nothing.
            decision = decide(
                scope["method"], scope["headers"], scope.get("query_string", b""), self._senders
            )
            if await answered_here(send, scope["method"], decision):
                return
            extra = decision.response_headers
        target = route.parse(parts)
        if target is None:
            await send_error(
                send, 404, f"not an open-time URL: expected {route.usage}", extra, scope["method"]
            )
            return
        method = scope["method"]
        if method not in route.methods:
            message = f"method {method} not allowed: {self._not_allowed}"
            await send_error(send, 405, message, (*extra, self._allow), method)
            return
        services: Services = scope["state"]["services"]
        kind, block, campaign = route.kinds[-1], None, None
        request: Open | None = None
        try:
            now = services.clock()
            claims: Claims | None
            try:  # inline, not a helper: this is every open's path
                claims, problem = services.verifier.verify(target.token, now=int(now)), None
                campaign = services.campaigns.get(claims.campaign)
            except TokenError as exc:
                claims, problem = _failed(exc)
                campaign = services.campaigns.get(_named_campaign(claims, exc))
            if self._only is not None:  # one kind on this route: no search (every amp-list open)
                kind, block = (
                    self._only,
                    None if campaign is None else self._only.find(campaign, target.block),
                )
            else:
                kind, block = self._find(campaign, target.block)
            request = Open(services, scope, receive, target, claims, now, campaign)
            answer = kind.answer(request, block, problem)
            if not isinstance(answer, Answer):  # waiting for data: the cold path
                answer = await answer
        except Exception as exc:
            # Last line of defence: the email must still get a well-formed answer of its kind.
            self._fallbacks.failed(scope, exc, kind.name, campaign, block)
            answer = await _settled(
                kind, Open(services, scope, receive, target, None, services.clock(), campaign), block
            )
        services.open_stats.served(kind.name, answer.reason, answer.age, perf_counter() - started)
        if answer.reason is not None:
            rid = self._fallbacks.fallback(scope, answer.reason, kind.name, campaign, block)
            if rid is not None:  # a line was logged for this open: its answer names the line's id
                extra = (*extra, (REQUEST_ID_HEADER, rid))
        if campaign is not None and request is not None and campaign.measured:
            _expose(services, kind.name, request, campaign.name, answer)
        await send_answer(send, scope, answer, extra)

    def _find(self, campaign: Campaign | None, name: str) -> tuple[Kind, Any]:
        """The kind that has a block of that name in the token's campaign, and the block (or None)."""
        kinds = self.route.kinds
        if campaign is None:
            return kinds[-1], None
        for kind in kinds:
            block = kind.find(campaign, name)
            if block is not None:
                return kind, block
        return kinds[-1], None


def _expose(services: Services, kind: str, request: Open, campaign: str, answer: Answer) -> None:
    """Offer the answered open (or click) to the exposure sink; a failing sink never fails the open."""
    if kind == "form" or type(services.exposures) is NullSink:  # a submission is not an open
        return
    decision = request.decision
    try:
        services.exposures.record(
            Exposure(  # positional: campaign, block, variant, experiment, fetch_class, outcome, kind, ...
                campaign,
                request.target.block,
                DEFAULT_VARIANT if decision is None else decision.variant,
                None if decision is None else decision.experiment,
                fetch_class_of(request),
                answer.reason or "ok",
                kind,
                "click" if kind == "click" else "open",
                request.now,
            )
        )
    except Exception:
        logger.exception("recording an exposure failed")


async def _settled(kind: Kind, request: Open, block: Any | None) -> Answer:
    """The kind's answer for an internal error: the block's designed fallback, else its generic one."""
    try:
        answer = kind.answer(request, block, Reason.INTERNAL_ERROR)
        return answer if isinstance(answer, Answer) else await answer
    except Exception:
        if block is None:
            raise
        logger.exception("open-time %s fallback failed", kind.name)
        return await _settled(kind, request, None)


def _failed(exc: TokenError) -> tuple[Claims | None, Reason]:
    """An expired token's claims are authentic (they name the campaign's fallback); a bad one's are not."""
    return (exc.claims if isinstance(exc, TokenExpired) else None), reason_of(exc.reason)


def _named_campaign(claims: Claims | None, exc: TokenError) -> str:
    """The campaign whose static fallback a failed token gets: an expired token's (authentic), else the
    one a bad token names (unauthenticated, so only public fallback content is ever chosen by it)."""
    return claims.campaign if claims is not None else exc.claimed_campaign or ""


async def not_found(scope: Scope, receive: Receive, send: Send) -> None:
    await send_error(
        send,
        404,
        "not an open-time URL: expected /v1/{token}/{list|html|img|form}/{block}, /view"
        " or /click/{block}/{slot}",
        method=scope["method"],
    )
