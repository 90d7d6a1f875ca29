"""The context of one open (pure): when it is for the reader, who fetched, on what device, from where.

Rules (``app.decisions.rules``) read it; nothing here does I/O. What a request can tell depends on who
fetched it: a mail provider's image proxy or Apple's privacy relay fetches on the reader's behalf, so
its User-Agent and its address are the proxy's, not the reader's. ``device`` and ``country`` are
therefore only told for a direct fetch (``fetch_class == "direct"``); every other class gets
``"unknown"`` and None, never a guess from the proxy's own headers.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, tzinfo
from typing import Any, Literal

Device = Literal["desktop", "mobile", "unknown"]
DEVICES: tuple[Device, ...] = ("desktop", "mobile", "unknown")
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
# Fetch classes that fetch for the reader themselves: only these tell the reader's device and place.
REVEALING = frozenset({"direct", "send", "preview"})
# Phones and tablets first: their User-Agents also name a desktop OS family ("like Mac OS X", "Linux").
_MOBILE = ("iphone", "ipad", "ipod", "android", "mobile", "windows phone")
_DESKTOP = ("windows nt", "macintosh", "mac os x", "x11", "cros", "linux")

# ISO 3166-1 alpha-2, officially assigned codes: a CDN header value outside this list is ignored.
COUNTRIES = frozenset(
    """AD AE AF AG AI AL AM AO AQ AR AS AT AU AW AX AZ BA BB BD BE BF BG BH BI BJ BL BM BN BO BQ BR BS
    BT BV BW BY BZ CA CC CD CF CG CH CI CK CL CM CN CO CR CU CV CW CX CY CZ DE DJ DK DM DO DZ EC EE EG
    EH ER ES ET FI FJ FK FM FO FR GA GB GD GE GF GG GH GI GL GM GN GP GQ GR GS GT GU GW GY HK HM HN HR
    HT HU ID IE IL IM IN IO IQ IR IS IT JE JM JO JP KE KG KH KI KM KN KP KR KW KY KZ LA LB LC LI LK LR
    LS LT LU LV LY MA MC MD ME MF MG MH MK ML MM MN MO MP MQ MR MS MT MU MV MW MX MY MZ NA NC NE NF NG
    NI NL NO NP NR NU NZ OM PA PE PF PG PH PK PL PM PN PR PS PT PW PY QA RE RO RS RU RW SA SB SC SD SE
    SG SH SI SJ SK SL SM SN SO SR SS ST SV SX SY SZ TC TD TF TG TH TJ TK TL TM TN TO TR TT TV TW TZ UA
    UG UM US UY UZ VA VC VE VG VI VN VU WF WS YE YT ZA ZM ZW""".split()  # noqa: SIM905
)


@dataclass(slots=True)
class OpenContext:
    """What rules may read about one open. ``profile`` is None when the rules need none (not loaded).

    Slotted, not frozen: one is built per decided open, and a frozen dataclass's ``__init__`` sets
    each field through ``object.__setattr__`` (several times slower). Nothing mutates it."""

    at: float  # Unix time of the open (or of sending, or the preview's chosen moment)
    zone: tzinfo  # the recipient's zone: the profile's ``zone_field``, else the campaign's ``zone``
    fetch_class: str  # app.open_time.fetch_class names, or "send" / "preview"
    device: Device = "unknown"
    country: str | None = None
    recipient: str | None = None  # experiments bucket by it; never logged or recorded
    profile: Mapping[str, Any] | None = None

    _local: datetime | None = None

    @property
    def local(self) -> datetime:
        """The reader's wall-clock time (zoneinfo applies the right offset on either side of DST);
        computed once per open, however many rules read it."""
        local = self._local
        if local is None:
            local = self._local = datetime.fromtimestamp(self.at, self.zone)
        return local

    @property
    def weekday(self) -> str:
        return WEEKDAYS[self.local.weekday()]


def device_of(user_agent: str | None, fetch_class: str) -> Device:
    """The reader's device class, when the fetch is the reader's own: a proxy's User-Agent is not theirs."""
    if fetch_class not in REVEALING or not user_agent:
        return "unknown"
    return _device(user_agent)


@functools.lru_cache(maxsize=1024)  # the same few clients open again and again
def _device(user_agent: str) -> Device:
    agent = user_agent.lower()
    if any(marker in agent for marker in _MOBILE):
        return "mobile"
    if any(marker in agent for marker in _DESKTOP):
        return "desktop"
    return "unknown"


def country_of(value: str | None, fetch_class: str) -> str | None:
    """The trusted CDN header's country, if it is an assigned ISO 3166 alpha-2 code and the fetch is
    the reader's own (behind a proxy, the CDN sees the proxy's country)."""
    if value is None or fetch_class not in REVEALING:
        return None
    code = value.strip().upper()
    return code if code in COUNTRIES else None


def valid_country(code: str) -> bool:
    return code in COUNTRIES
