"""amp-list JSON: shape a recipient's profile data into ``{"items": [...]}`` for one list block.

Pure functions: the profile attributes go in, encoded bytes come out (or ``None`` when the
recipient has no usable data, so the caller serves the block's fallback). Every URL field is
made a complete absolute https URL here, because AMP4EMAIL only allows mustache as a whole
attribute value. A field with a display format (``app.render.formats``) carries the formatted text:
formatting happens here, once per render into the cache, never per open and never in mustache.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from datetime import UTC, tzinfo
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urljoin, urlsplit

import orjson

from app.render.formats import to_moment

if TYPE_CHECKING:  # campaigns compile their shapers with this module, so types only here
    from app.campaigns.loader import ItemField, ListBlock

_MISSING = object()
MISSING = _MISSING  # what fallback_value answers for a value its field refuses
URL_MEMO_SIZE = 4096  # completed URLs remembered per url field (a few hundred KB at most)
URL_SAFE = ":/?#[]@!$&()*+,;=%~-._"
# No dot segments, colons or slashes: joining such a name to a base ending in "/" is concatenation.
_PLAIN_NAME = re.compile(r"[A-Za-z0-9_~-][A-Za-z0-9_.~-]*")
_PLAIN_HTTPS = re.compile(
    r"https://[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*(?::[0-9]{1,5})?(?:/[A-Za-z0-9_.~/%-]*)?"
)


Shaper = Callable[[Any, tzinfo], "dict[str, Any] | None"]


def compile_shaper(fields: tuple[ItemField, ...]) -> Shaper:
    """A block's item shaper: one raw item and the recipient's time zone in, the shaped item out
    (None drops the item).

    Generated once per block when its campaign loads, as straight-line code with one step per field:
    shaping runs for every item of every cold open, and a loop over field specs spent ~40% more on
    unpacking specs and on branches that are constant for a given field. Names, keys, defaults and
    coercers are values in the function's namespace, never spliced into its source, so nothing from
    ``blocks.toml`` becomes code.
    """
    namespace: dict[str, Any] = {"MISSING": _MISSING, "lookup": _lookup}
    lines = [
        "def shape(raw, zone):",
        "    if not isinstance(raw, dict):",
        "        return None",
        "    item = {}",
    ]
    for i, field in enumerate(fields):
        namespace.update({f"k{i}": field.path[0], f"p{i}": field.path[1:], f"n{i}": field.name})
        namespace.update({f"c{i}": _coercer(field), f"d{i}": field.default})
        lines.append(f"    v = raw.get(k{i})")
        if len(field.path) > 1:
            lines += ["    if v is not None:", f"        v = lookup(v, p{i})"]
        lines += ["    if v is not None and v is not MISSING:", f"        v = c{i}(v)"]
        if field.format is not None:  # the display text, from the coerced value
            namespace[f"f{i}"] = field.format.render
            lines += ["        if v is not MISSING:", f"            v = f{i}(v, zone)"]
        lines.append("    if v is None or v is MISSING:")
        if field.default is not None:
            lines.append(f"        item[n{i}] = d{i}")
        else:
            lines.append("        return None" if field.required else "        pass")
        lines += ["    else:", f"        item[n{i}] = v"]
    lines.append("    return item")
    exec(compile("\n".join(lines), "<opentime item shaper>", "exec"), namespace)  # noqa: S102
    shaper: Shaper = namespace["shape"]
    return shaper


def render_list(block: ListBlock, attributes: dict[str, Any]) -> bytes | None:
    """Return the encoded amp-list body, or None when no item survives shaping."""
    source = _lookup(attributes, block.source)
    if isinstance(source, dict):
        candidates: list[Any] = [source]
    elif isinstance(source, list):
        candidates = source
    else:
        return None
    shape = block.shape
    zone = block.zones.of(attributes) if block.dated else UTC
    items = []
    for candidate in candidates:
        item = shape(candidate, zone)
        if item is not None:
            items.append(item)
            if len(items) == block.max_items:
                break
    if not items:
        return None
    # orjson over-allocates its result buffer (~8 KB); copy so a cached body costs only its length.
    return bytes(memoryview(orjson.dumps({"items": items})))


def _lookup(data: Any, path: tuple[str, ...]) -> Any:
    for key in path:
        if not isinstance(data, dict):
            return _MISSING
        data = data.get(key, _MISSING)
    return data


def fallback_value(field: ItemField, value: Any, zone: tzinfo) -> Any:
    """A static fallback item's value through the field's rules (its base, its format), or _MISSING.

    Text already written for display (a price as "$5.00") stays as it is.
    """
    if field.type == "url":
        return _url(value, field.base)
    written_for_display = type(value) is str and (field.type != "datetime" or to_moment(value) is None)
    if field.format is None or written_for_display:
        return value
    value = _coercer(field)(value)
    return value if value is _MISSING else field.format.render(value, zone)


def _coercer(field: ItemField) -> Callable[[Any], Any]:
    if field.type == "text":
        return _text_coercer(field.max_length)
    if field.type == "url":
        return _url_coercer(field.base)
    if field.type == "datetime":
        return _moment
    return _integer if field.type == "integer" else _number if field.type == "number" else _bool


def _moment(value: Any) -> Any:
    moment = to_moment(value)
    return _MISSING if moment is None else moment


def _text_coercer(max_length: int) -> Callable[[Any], Any]:
    def coerce(value: Any) -> Any:
        if type(value) is not str:
            if isinstance(value, bool) or not isinstance(value, int | float | str):
                return _MISSING
            value = str(value)
        text = value.strip()
        if len(text) > max_length:
            text = text[: max_length - 1].rstrip() + "…"
        return text or _MISSING

    return coerce


def _number(value: Any) -> Any:
    kind = type(value)
    if kind is int or (kind is float and math.isfinite(value)):
        return value
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return _MISSING
    return value


def _integer(value: Any) -> Any:
    value = _number(value)
    return value if value is _MISSING else int(value)


def _bool(value: Any) -> Any:
    return value if isinstance(value, bool) else _MISSING


def _url_coercer(base: str | None) -> Callable[[Any], Any]:
    # Fast paths (the common cases, ~0.3 µs instead of ~8 µs through urljoin/quote/urlsplit): a plain
    # relative name joined to a base that ends in "/", or an https URL made only of safe characters.
    plain_name = _PLAIN_NAME.fullmatch if base is not None and base[-1] == "/" else None
    plain_https = _PLAIN_HTTPS.fullmatch
    # The same few values (a catalogue's product images and SKUs) come back in most recipients' items:
    # a dict look-up costs a tenth of the regular expression (callgrind: ~1,300 instructions a value).
    # Bounded, since profile data is not ours to trust.
    known: dict[str, Any] = {}

    def coerce(value: Any) -> Any:
        if not isinstance(value, str):
            return _MISSING
        url = known.get(value)
        if url is None:
            if len(known) >= URL_MEMO_SIZE:
                known.clear()
            url = known[value] = _complete(value)
        return url

    def _complete(value: str) -> Any:
        if plain_name is not None and plain_name(value):
            return f"{base}{value}"
        if plain_https(value):
            return value
        return _url_general(value, base)

    return coerce


def _url(value: Any, base: str | None) -> Any:
    """One URL made complete and safe (or _MISSING): what a ``url`` field with this base does."""
    return _url_coercer(base)(value)


def _url_general(value: str, base: str | None) -> Any:
    value = value.strip()
    if not value:
        return _MISSING
    try:
        url = urljoin(base, value) if base else value
        # Percent-encode what may not stand in a URL (spaces, quotes, <>, braces, non-ASCII): profile
        # data is untrusted, and AMP validators and mail clients reject such href/src values.
        url = quote(url, safe=URL_SAFE)
        parts = urlsplit(url)
    except ValueError:  # e.g. "https://[x/y": an invalid IPv6 host
        return _MISSING
    # Only complete https URLs reach the email: no javascript:, no relative, no http (except under a
    # base on this server's own http origin: public_base_url on localhost, for the demo).
    if not parts.hostname or (parts.scheme != "https" and not _same_origin(parts.scheme, parts.netloc, base)):
        return _MISSING
    return url


def _same_origin(scheme: str, netloc: str, base: str | None) -> bool:
    if base is None:
        return False
    own = urlsplit(base)
    return (scheme, netloc) == (own.scheme, own.netloc)
