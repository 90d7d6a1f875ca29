"""What counts as personal data in an id, a log line or a request path, and how it is hidden.

An "@" is what makes a recipient id an email address, and so personal data that is sealed in tokens
and never logged. It does not always arrive as a plain "@": an ESP's export or a template may write
it full-width (U+FF20 FULLWIDTH COMMERCIAL AT, or U+FE6B SMALL COMMERCIAL AT) or percent-encoded
(``%40``, twice as ``%2540``, or the full-width form's UTF-8 bytes ``%EF%BC%A0``). ``has_at`` sees
all of them: the text is percent-decoded a few times and NFKC-normalized (which maps both
compatibility forms to "@") before it looks.

``redact_path`` is for the access log: a path with its query as uvicorn logs it, with the open-time
token, the customer id of ``/api/customers/{id}`` and every query value replaced, and any segment
that still holds an email address hidden.
"""

from __future__ import annotations

import re
import unicodedata
from urllib.parse import unquote

HIDDEN = "…"
_DECODE_ROUNDS = 3  # %40, %2540, %252540: more rounds than that is not a spelling anyone uses
_AT = "@"
# Where an address may hide in free text: a run of characters that are not spaces or delimiters.
_WORD = re.compile(r"[^\s\"'<>()\[\]{},;/?#=&]+")
_CUSTOMERS = "/api/customers/"


def has_at(text: str) -> bool:
    """Does ``text`` hold an "@" in any spelling (plain, full-width, small, percent-encoded)?"""
    if _AT in text:
        return True
    if text.isascii() and "%" not in text:
        return False  # the common opaque id: nothing to decode or normalize
    for _ in range(_DECODE_ROUNDS):
        decoded = unquote(text)
        if decoded == text:
            break
        text = decoded
    return _AT in unicodedata.normalize("NFKC", text)


def redact_emails(text: str) -> str:
    """``text`` with every word that holds an "@" (in any spelling) replaced by ``<email>``."""
    if text.isascii() and _AT not in text and "%" not in text:
        return text  # most log lines: nothing to look at
    return _WORD.sub(_hide_email, text)


def _hide_email(match: re.Match[str]) -> str:
    return "<email>" if has_at(match[0]) else match[0]


def redact_path(path: str) -> str:
    """A request path (with its query) safe to log: no token, customer id, query value or address."""
    path, question, query = path.partition("?")
    segments = path.split("/")
    if path.startswith("/v1/") and len(segments) > 2:
        segments[2] = HIDDEN  # /v1/{token}/...: the token names the recipient
    elif path.startswith(_CUSTOMERS) and len(segments) > 3:
        segments[3] = "{id}"  # /api/customers/{id}/...
    safe = "/".join(HIDDEN if has_at(segment) else segment for segment in segments)
    if question:
        safe += "?" + "&".join(_hide_value(item) for item in query.split("&"))
    return safe


def _hide_value(item: str) -> str:
    name, equals, _ = item.partition("=")
    if has_at(name):
        return HIDDEN
    return f"{name}={HIDDEN}" if equals else name
