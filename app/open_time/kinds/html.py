"""HTML at open time: block fragments (``/v1/{token}/html/{block}``) and the web view (``/v1/{token}/view``).

Fragments serve ESPs that fetch content at send time (Braze Connected Content and the like) and the
web view: the list block's items rendered through ``fragments/<block>.html``. The web view renders
the campaign's HTML part with the data at the moment of opening ("view in browser"). Both answer 200
with static content when the token is bad or the data is late, with the reason in
``X-Opentime-Fallback``, and never show one recipient's data to another.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import orjson

from app.asgi import Receive, Scope, Send, send_bytes
from app.campaigns.loader import Campaign, ListBlock
from app.content.cache_policy import OPEN_TIME_PRIVATE
from app.open_time.kinds.list import FALLBACK_HEADER, find_block, send_error
from app.security.tokens import Claims, TokenError

if TYPE_CHECKING:
    from app.services import Services

logger = logging.getLogger(__name__)

HTML_HEADERS = (
    (b"content-type", b"text/html; charset=utf-8"),
    OPEN_TIME_PRIVATE,
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),  # the URL holds a token: keep it out of Referer headers
)
UNAVAILABLE_PAGE = (
    "<!doctype html><html lang=en><head><meta charset=utf-8><title>Email unavailable</title></head>"
    "<body><p>This email is no longer available online.</p></body></html>"
)
VIEW_BUDGET_S = 1.0


async def fragment_app(scope: Scope, receive: Receive, send: Send) -> None:
    parts = scope["path"].split("/")
    if len(parts) != 5:
        await send_error(send, 404, "not a fragment URL: expected /v1/{token}/html/{block}")
        return
    if not await _allowed_method(scope, send):
        return
    services: Services = scope["state"]["services"]
    try:
        html, reason = await fragment(services, parts[2], parts[4])
    except Exception:
        logger.exception("fragment request failed")
        html, reason = "", "internal-error"
    await send_html(send, html, reason, head=scope["method"] == "HEAD")


async def view_app(scope: Scope, receive: Receive, send: Send) -> None:
    parts = scope["path"].split("/")
    if len(parts) != 4:
        await send_error(send, 404, "not a web view URL: expected /v1/{token}/view")
        return
    if not await _allowed_method(scope, send):
        return
    services: Services = scope["state"]["services"]
    try:
        html, reason = await web_view(services, parts[2])
    except Exception:
        logger.exception("web view request failed")
        html, reason = UNAVAILABLE_PAGE, "internal-error"
    await send_html(send, html, reason, head=scope["method"] == "HEAD")


async def fragment(services: Services, token: str, block_name: str) -> tuple[str, str | None]:
    claims, reason = _verify(services, token)
    block = None if claims is None else find_block(services, claims.campaign, block_name)
    campaign = None if claims is None else services.campaigns.get(claims.campaign)
    if claims is None or campaign is None or block is None or block_name not in campaign.fragments:
        return "", reason or "unknown-block"
    if reason is not None or claims.recipient is None:
        return _render_fragment(
            services, campaign, block, block.fallback_body, live=False
        ), reason or "no-recipient"
    outcome = services.lists.cached(campaign.name, block, claims.recipient)
    if outcome is None:
        outcome = await services.lists.load(campaign.name, block, claims.recipient)
    live = outcome.fallback_reason is None
    return _render_fragment(services, campaign, block, outcome.body, live=live), outcome.fallback_reason


async def web_view(services: Services, token: str) -> tuple[str, str | None]:
    claims, reason = _verify(services, token)
    if claims is None or reason is not None or claims.recipient is None:
        return UNAVAILABLE_PAGE, reason or "no-recipient"
    campaign = services.campaigns.get(claims.campaign)
    if campaign is None or not campaign.has_email:
        return UNAVAILABLE_PAGE, "unknown-campaign"
    attributes, reason = await services.lists.profile(claims.recipient, VIEW_BUDGET_S)
    context = services.sendtime.context(campaign, claims.recipient, attributes, token=token)
    return services.templates.render(campaign.template("email.html"), context), reason


def _verify(services: Services, token: str) -> tuple[Claims | None, str | None]:
    """Claims and None when valid; the authentic claims and the reason when expired; else None."""
    try:
        return services.verifier.verify(token, now=int(services.clock())), None
    except TokenError as exc:
        return getattr(exc, "claims", None), exc.reason


def _render_fragment(
    services: Services, campaign: Campaign, block: ListBlock, body: bytes, *, live: bool
) -> str:
    items: list[Any] = orjson.loads(body).get("items", [])
    context = {"items": items, "live": live, "block": block.name, "campaign": {"name": campaign.name}}
    return services.templates.render(campaign.template(f"fragments/{block.name}.html"), context)


async def _allowed_method(scope: Scope, send: Send) -> bool:
    if scope["method"] in ("GET", "HEAD"):
        return True
    await send_error(send, 405, f"method {scope['method']} not allowed: use GET")
    return False


async def send_html(send: Send, html: str, reason: str | None, *, head: bool = False) -> None:
    body = html.encode()
    headers = [*HTML_HEADERS, (b"content-length", str(len(body)).encode())]
    if reason is not None:
        headers.append((FALLBACK_HEADER, reason.encode()))
    await send_bytes(send, 200, headers, b"" if head else body)
