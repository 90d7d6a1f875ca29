"""Email addresses for the From and To headers of a rendered message: parsed, checked, IDNA-encoded.

One mailbox per value: ``name@example.com``, ``<name@example.com>``, ``Name <name@example.com>`` or
``"Name, with specials" <name@example.com>``. This is a deliberately small grammar, parsed here rather
than by the standard library's address parser, which accepts much no mail server will (``a@-x.com``,
``a_b.com``), and on some malformed input raises IndexError, AttributeError, UnboundLocalError or
RecursionError (nested comments) instead of reporting a defect. Comments, groups and lists are refused.

* The local part must be an ASCII dot-atom (RFC 5322), at most 64 characters. Opentime writes no
  SMTPUTF8 messages, so a non-ASCII local part (``zoë@example.com``) is refused, and so is a quoted
  one (``"a b"@example.com``), which ESPs commonly refuse too.
* The domain is encoded with IDNA 2008 and UTS #46 mapping (the ``idna`` package): ``Bücher.example``
  becomes ``xn--bcher-kva.example``. Python's own ``"idna"`` codec is IDNA 2003: it turns ``faß.de``
  into ``fass.de``, another domain, and lets ``a_b.com`` or ``-x.com`` through. The domain needs at
  least two labels and a non-numeric top label; domain literals (``[192.0.2.1]``) are refused.
* The display name may be any single-line text (the ``email`` package encodes it, RFC 2047); one with
  any of ``()<>[]:;@\\,"`` must be a quoted string.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from email.headerregistry import Address

import idna

from app.errors import OpentimeError

MAX_INPUT_CHARS = 512
MAX_LOCAL_CHARS = 64  # RFC 5321 4.5.3.1.1
MAX_ADDR_SPEC_CHARS = 254  # RFC 5321 path limit (256) minus the angle brackets
EXPECTED = "expected name@example.com or Name <name@example.com>"
# Every character str.splitlines() breaks on (the email package refuses them in headers), and controls.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_DOT_ATOM = re.compile(rf"{_ATEXT}(?:\.{_ATEXT})*")
_QUOTED = re.compile(r'"((?:[^"\\]|\\.)*)"')
_NAME_SPECIALS = frozenset('()<>[]:;@\\,"')


class AddressError(OpentimeError, ValueError):
    """An address cannot go into a From or To header; the message says why, in one line."""


@dataclass(frozen=True, slots=True)
class Mailbox:
    """A checked mailbox; ``domain`` is ASCII (IDNA A-labels), lowercase."""

    display_name: str
    local: str
    domain: str

    @property
    def addr_spec(self) -> str:
        return f"{self.local}@{self.domain}"

    def header(self) -> Address:
        return Address(display_name=self.display_name, username=self.local, domain=self.domain)

    def same_address(self, other: Mailbox) -> bool:
        """The same mailbox for a mail provider: local parts compared without case, as Gmail does."""
        return self.addr_spec.lower() == other.addr_spec.lower()

    def __str__(self) -> str:
        return str(self.header())


def parse_mailbox(value: str) -> Mailbox:
    """The one mailbox in ``value``, or AddressError saying what is wrong with it."""
    if _CONTROL.search(value):
        raise AddressError("must be a single line without control characters")
    if len(value) > MAX_INPUT_CHARS:
        raise AddressError(f"is longer than {MAX_INPUT_CHARS} characters")
    if not value.strip():
        raise AddressError("is empty")
    display_name, addr_spec = _split(value.strip())
    local, at, domain = addr_spec.rpartition("@")
    if not at or not local or not domain:
        raise AddressError(f"{value!r} is not an email address ({EXPECTED})")
    local, domain = _local_part(local), encode_domain(domain)
    if len(local) + 1 + len(domain) > MAX_ADDR_SPEC_CHARS:
        raise AddressError(f"{local}@{domain} is longer than {MAX_ADDR_SPEC_CHARS} characters")
    return Mailbox(display_name, local, domain)


def _split(text: str) -> tuple[str, str]:
    """(display name, addr-spec) of ``Name <addr-spec>``, or ``("", text)`` for a bare address."""
    if not text.endswith(">"):
        if "," in text or ";" in text:
            raise AddressError(f"{text!r} holds more than one address: give one")
        if "<" in text:
            raise AddressError(f"{text!r} has a '<' without a closing '>' ({EXPECTED})")
        return "", text
    start = text.rfind("<")
    if start < 0:
        raise AddressError(f"{text!r} has a '>' without an opening '<' ({EXPECTED})")
    return _display_name(text[:start].strip()), text[start + 1 : -1]


def _display_name(name: str) -> str:
    quoted = _QUOTED.fullmatch(name)
    if quoted:
        return re.sub(r"\\(.)", r"\1", quoted.group(1))
    if _NAME_SPECIALS.intersection(name):
        raise AddressError(
            f'display name {name!r} has one of ()<>[]:;@\\," (one address per value; '
            'quote a name that needs them: "Shop, Inc." <news@example.com>)'
        )
    return " ".join(name.split())


def _local_part(local: str) -> str:
    if not local.isascii():
        raise AddressError(f"local part {local!r} is not ASCII: Opentime does not write SMTPUTF8 messages")
    if local.startswith('"'):
        raise AddressError(f"quoted local part {local} is not supported")
    if not _DOT_ATOM.fullmatch(local):
        raise AddressError(
            f"local part {local!r} must be letters, digits and !#$%&'*+/=?^_`{{|}}~- separated by single dots"
        )
    if len(local) > MAX_LOCAL_CHARS:
        raise AddressError(f"local part is longer than {MAX_LOCAL_CHARS} characters")
    return local


def encode_domain(domain: str) -> str:
    """The domain in ASCII (IDNA 2008 A-labels, lowercase), or AddressError."""
    if domain.startswith("["):
        raise AddressError(f"domain literal {domain} is not supported: give a domain name")
    try:
        ascii_domain = idna.encode(domain, uts46=True).decode("ascii")
    except (idna.IDNAError, UnicodeError) as exc:
        raise AddressError(f"domain {domain!r} is not a valid domain name ({exc})") from None
    labels = ascii_domain.split(".")
    if len(labels) < 2 or not labels[-1] or labels[-1].isdigit():
        raise AddressError(f"domain {domain!r} needs a name and a top-level domain, like example.com")
    return ascii_domain
