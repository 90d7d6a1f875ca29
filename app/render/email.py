"""Send-time email: the three parts of a campaign for one recipient, their limits, and the MIME message.

Gmail's AMP limits are enforced precisely (which limit, by how much): the AMP part at most 200,000
bytes, all CSS at most 75,000 bytes, one inline ``style`` attribute at most 1,000 bytes. An HTML part
over 102 KB only warns, because Gmail clips it rather than rejecting it. The checks use regular
expressions over the rendered text (microseconds), not an HTML parser (milliseconds per email).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import format_datetime, make_msgid
from typing import Any

from app.errors import OpentimeError
from app.render.addresses import Mailbox

AMP_MAX_BYTES = 200_000
CSS_MAX_BYTES = 75_000
INLINE_STYLE_MAX_BYTES = 1_000
HTML_CLIP_BYTES = 102 * 1024

_AMP_CUSTOM = re.compile(r"<style\b[^>]*\bamp-custom\b[^>]*>(.*?)</style>", re.S | re.I)
_INLINE_STYLE = re.compile(r"""\sstyle\s*=\s*(?:"([^"]*)"|'([^']*)')""", re.I)
_IMPORTANT = re.compile(r"!\s*important", re.I)


class EmailLimitError(OpentimeError):
    """A rendered part breaks a hard limit of AMP for Email."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


@dataclass(frozen=True, slots=True)
class EmailParts:
    subject: str
    text: str
    amp: str
    html: str
    warnings: tuple[str, ...] = field(default=())

    def sizes(self) -> dict[str, int]:
        return {name: len(getattr(self, name).encode()) for name in ("text", "amp", "html")}


def parts_json(recipient: str, parts: EmailParts) -> dict[str, Any]:
    """The JSON form of a rendered email, shared by ``opentime render`` and ``POST /api/render``."""
    return {
        "recipient": recipient,
        "subject": parts.subject,
        "text": parts.text,
        "amp": parts.amp,
        "html": parts.html,
        "sizes": parts.sizes(),
        "warnings": list(parts.warnings),
    }


def check_limits(parts: EmailParts) -> EmailParts:
    """Return the parts with warnings attached, or raise EmailLimitError naming every broken limit."""
    problems = amp_limit_problems(parts.amp)
    if problems:
        raise EmailLimitError(problems)
    html_bytes = len(parts.html.encode())
    if html_bytes > HTML_CLIP_BYTES:
        warning = f"HTML part is {html_bytes} bytes: Gmail clips messages over {HTML_CLIP_BYTES} bytes"
        return EmailParts(parts.subject, parts.text, parts.amp, parts.html, (*parts.warnings, warning))
    return parts


def amp_limit_problems(amp: str) -> list[str]:
    problems = []
    size = len(amp.encode())
    if size > AMP_MAX_BYTES:
        problems.append(_over("AMP part", size, AMP_MAX_BYTES))
    styles = [m.group(1) or m.group(2) or "" for m in _INLINE_STYLE.finditer(amp)]
    custom = _AMP_CUSTOM.findall(amp)
    css = sum(len(block.encode()) for block in custom) + sum(len(style.encode()) for style in styles)
    if css > CSS_MAX_BYTES:
        problems.append(_over("AMP CSS", css, CSS_MAX_BYTES))
    for index, style in enumerate(styles, start=1):
        length = len(style.encode())
        if length > INLINE_STYLE_MAX_BYTES:
            problems.append(_over(f"inline style #{index}", length, INLINE_STYLE_MAX_BYTES))
    if _IMPORTANT.search("".join(custom) + "".join(styles)):
        problems.append("AMP CSS uses !important, which AMP for Email forbids")
    return problems


def _over(what: str, size: int, limit: int) -> str:
    return f"{what} is {size} bytes, {size - limit} over the {limit}-byte limit"


def to_message(parts: EmailParts, *, sender: Mailbox, to: Mailbox | None, now: float) -> EmailMessage:
    """A complete message: Date, From, To (when known), Subject, Message-ID on the sender's domain and
    MIME-Version, then multipart/alternative ordered text/plain, text/x-amp-html, text/html (clients
    show the last part they understand, so the AMP part must come before the HTML part)."""
    message = EmailMessage(policy=SMTP)
    message["Date"] = format_datetime(datetime.fromtimestamp(now, UTC))
    message["From"] = sender.header()
    if to is not None:
        message["To"] = to.header()
    message["Subject"] = parts.subject
    # Mailbox.domain is already IDNA-encoded, so the Message-ID stays ASCII.
    message["Message-ID"] = make_msgid(domain=sender.domain)
    message["MIME-Version"] = "1.0"
    message.set_content(parts.text, subtype="plain", charset="utf-8", cte="quoted-printable")
    message.add_alternative(parts.amp, subtype="x-amp-html", charset="utf-8", cte="quoted-printable")
    message.add_alternative(parts.html, subtype="html", charset="utf-8", cte="quoted-printable")
    for part in message.iter_parts():
        del part["MIME-Version"]  # set_content adds one to each part: it belongs on the message only
    return message


def address_warnings(sender: Mailbox, to: Mailbox | None) -> list[str]:
    """What makes a valid message show less than it should."""
    if to is not None and sender.same_address(to):
        return [
            f"From and To are the same address ({sender.addr_spec}): "
            "Gmail shows the HTML part, not the AMP part, when sender and recipient are the same"
        ]
    return []


def missing_sender(campaign: str) -> str:
    """Why there is no From: the start of the error (``.eml``) or warning (other formats) that says so."""
    return (
        f"no From address: campaign {campaign!r} declares none "
        '(from = "Name <news@example.com>" under [campaign] in its blocks.toml) and none was given'
    )
