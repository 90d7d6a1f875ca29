"""Campaign definitions: ``amp_templates/<campaign>/blocks.toml`` and their static fallbacks.

A campaign declares its dynamic blocks: ``list`` blocks (below), ``form`` blocks (``app.campaigns.forms``) and
``image`` blocks (``app.images.blocks``) and ``countdown`` blocks (``app.countdown.blocks``).
A ``list`` block says which profile data it reads (``source``, a dotted path into the profile
attributes), how each item is shaped (``fields``), how many items it keeps, its open-time budget and
the static fallback JSON served when the data is late, missing or the token is bad. A field may
declare a display ``format`` (``app.render.formats``): the JSON then carries the text a reader sees,
and dates show in the recipient's zone (``[campaign] zone`` and ``zone_field``). Everything is
validated at load time, so a mistake is an error naming the file and the block, never a broken email
at open time.
"""

from __future__ import annotations

import dataclasses
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import orjson

from app.campaigns.forms import FormBlock, form_block
from app.countdown.blocks import CountdownBlock, countdown_block
from app.decisions.blocks import parse_experiments, with_decisions
from app.decisions.clicks import safe_target, with_clicks
from app.decisions.decide import cached_names
from app.decisions.experiments import Experiment
from app.errors import CampaignError
from app.images.blocks import image_block
from app.images.layout import ImageBlock
from app.render.addresses import AddressError, Mailbox, parse_mailbox
from app.render.formats import UTC_ONLY, Format, FormatError, Zones, parse_format, parse_zone
from app.render.json import MISSING, Shaper, compile_shaper, fallback_value

_HOST = re.compile(r"[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)*")
CAMPAIGN_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,39}")
BLOCK_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,39}")
FieldType = Literal["text", "number", "integer", "bool", "url", "datetime"]
FIELD_TYPES: tuple[str, ...] = ("text", "number", "integer", "bool", "url", "datetime")
# Which field types each kind of format reads (app.render.formats.Format.takes).
FORMATTABLE = {"number": ("number", "integer"), "datetime": ("datetime",)}
MAX_ITEMS_CAP = 100
MAX_FALLBACK_BYTES = 64 * 1024


@dataclass(frozen=True, slots=True)
class ItemField:
    """One output field of an amp-list item."""

    name: str
    path: tuple[str, ...]
    type: FieldType
    required: bool
    default: Any
    max_length: int
    base: str | None
    format: Format | None = None  # the display text the JSON carries instead of the value


@dataclass(frozen=True, slots=True)
class ListBlock:
    name: str
    source: tuple[str, ...]
    fields: tuple[ItemField, ...]
    max_items: int
    budget_s: float
    cache_ttl_s: float | None
    fallback_body: bytes
    zones: Zones = UTC_ONLY  # where the recipient's dates show (the campaign's zone and zone_field)
    # Open-time decisions (app.decisions): variants and rules, None for a block without (the hot path
    # checks only this); click-through: the url field whose item link /click/ answers, and the hosts
    # such a link may go to.
    decider: Any = None
    click_field: str | None = None
    click_hosts: frozenset[str] = frozenset()
    family: str = ""  # the block's own name for a variant's block ("<block>~<variant>"), else ""
    # The fields compiled into one shaping function (app.render.json), once here, not on every open.
    shape: Shaper = dataclasses.field(init=False, repr=False, compare=False)
    dated: bool = dataclasses.field(init=False, repr=False, compare=False)  # needs the recipient's zone

    def __post_init__(self) -> None:
        object.__setattr__(self, "shape", compile_shaper(self.fields))
        object.__setattr__(self, "dated", any(f.type == "datetime" for f in self.fields))


EMAIL_PARTS = ("email.txt", "email.amp.html", "email.html")
# HTML parts are read for months in Apple Mail, Outlook and Yahoo: a year and a margin by default.
DEFAULT_HTML_LIFETIME_DAYS = 400
MAX_HTML_LIFETIME_DAYS = 3650


@dataclass(frozen=True, slots=True)
class Campaign:
    name: str
    title: str
    lists: Mapping[str, ListBlock]
    subject: str = ""
    sender: Mailbox | None = None  # [campaign] from: the From of its .eml output
    # Lifetime of the URLs the HTML part shows (images, countdowns, fragments, web view): read for months.
    html_lifetime_days: int = DEFAULT_HTML_LIFETIME_DAYS
    has_email: bool = False  # email.txt, email.amp.html and email.html are all present
    fragments: frozenset[str] = frozenset()  # list blocks with fragments/<block>.html
    forms: Mapping[str, FormBlock] = dataclasses.field(
        default_factory=dict
    )  # amp-form blocks (app.campaigns.forms)
    images: Mapping[str, ImageBlock] = dataclasses.field(default_factory=dict)  # image blocks (app.images)
    countdowns: Mapping[str, CountdownBlock] = dataclasses.field(default_factory=dict)  # countdown timers
    zones: Zones = UTC_ONLY  # the recipient's time zone: [campaign] zone_field, else zone (default UTC)
    experiments: tuple[Experiment, ...] = ()  # [experiments], in declared order (blocks hold them too)
    click_default: str | None = None  # where a click with a bad or expired token lands
    # Variants of list blocks with their own fragment template, fragments/<block>~<variant>.html.
    fragment_variants: frozenset[str] = frozenset()
    # Experiments, rules or click tracking: its opens and clicks are recorded for its report. A
    # campaign without them records nothing, so its opens pay nothing for exposures.
    measured: bool = False

    def template(self, part: str) -> str:
        """Template name (relative to the templates folder) of an email part or fragment."""
        return f"{self.name}/{part}"


def load_campaigns(
    templates_dir: Path, static_dir: Path, *, default_budget_ms: int, public_base_url: str
) -> dict[str, Campaign]:
    """Load every campaign folder that has a blocks.toml.

    ``public_base_url`` completes url bases that are paths (``base = "/static/demo/products/"``):
    files this server serves itself, wherever it is deployed.
    """
    if not templates_dir.is_dir():
        raise CampaignError(f"templates folder {templates_dir} does not exist")
    campaigns = {}
    for folder in sorted(p for p in templates_dir.iterdir() if (p / "blocks.toml").is_file()):
        campaigns[folder.name] = load_campaign(
            folder, static_dir, default_budget_ms=default_budget_ms, public_base_url=public_base_url
        )
    return campaigns


def load_campaign(
    folder: Path, static_dir: Path, *, default_budget_ms: int, public_base_url: str
) -> Campaign:
    name = folder.name
    path = folder / "blocks.toml"
    if not CAMPAIGN_NAME.fullmatch(name):
        raise CampaignError(f"{folder}: campaign folder names must match {CAMPAIGN_NAME.pattern}")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise CampaignError(f"{path}: {exc}") from None
    meta = _table(data.get("campaign", {}), f"{path} [campaign]")
    known_meta = {"title", "subject", "from", "zone", "zone_field", "html_lifetime_days", "click_default"}
    unknown_meta = sorted(set(meta) - known_meta)
    if unknown_meta:
        raise CampaignError(f"{path} [campaign]: unknown key(s) {', '.join(unknown_meta)}")
    zones = _zones(meta, f"{path} [campaign]")
    site = Site(static_dir, public_base_url.rstrip("/"), zones, default_budget_ms)
    blocks = _table(data.get("blocks", {}), f"{path} [blocks]")
    unknown_top = sorted(set(data) - {"campaign", "blocks", "experiments"})
    if unknown_top:
        raise CampaignError(f"{path}: unknown table(s) {', '.join(unknown_top)}")
    experiments = parse_experiments(data.get("experiments", {}), name, f"{path} [experiments]")
    zoned = bool(zones.path)  # time rules then need the profile (its zone_field)
    lists = {}
    forms = {}
    images = {}
    countdowns = {}
    for block_name, spec in blocks.items():
        where = f"{path} [blocks.{block_name}]"
        if not BLOCK_NAME.fullmatch(block_name):
            raise CampaignError(f"{where}: block names must match {BLOCK_NAME.pattern}")
        spec = _table(spec, where)
        kind = spec.get("kind")
        if kind == "list":
            parse_list = partial(_list_block, site=site)
            lists[block_name] = with_decisions(
                block_name, spec, parse_list, experiments, where, needs_zone_profile=zoned
            )
        elif kind == "form":
            forms[block_name] = form_block(block_name, spec, where)
        elif kind == "image":
            parse_image = partial(_image_block, static_dir=static_dir, budget_ms=default_budget_ms)
            images[block_name] = with_decisions(
                block_name, spec, parse_image, experiments, where, needs_zone_profile=zoned
            )
        elif kind == "countdown":
            countdowns[block_name] = countdown_block(block_name, spec, static_dir, where, default_budget_ms)
        else:
            raise CampaignError(f"{where}: unknown kind {kind!r} (supported: list, form, image, countdown)")
    click_default = _click_default(meta, path)
    tracked = [n for n, b in lists.items() if b.click_field is not None]
    tracked += [n for n, b in images.items() if b.link is not None or _variant_links(b)]
    if tracked and click_default is None:
        raise CampaignError(
            f"{path} [campaign]: click_default (an https URL) is required: blocks {', '.join(tracked)}"
            " track clicks, and a click with an expired token lands there"
        )
    return Campaign(
        name=name,
        title=_meta_str(meta, "title", path, default=name),
        lists=lists,
        subject=_meta_str(meta, "subject", path, default=""),
        sender=_sender(meta, path),
        html_lifetime_days=_int_in(
            meta.get("html_lifetime_days", DEFAULT_HTML_LIFETIME_DAYS),
            1,
            MAX_HTML_LIFETIME_DAYS,
            f"{path} [campaign] html_lifetime_days",
        ),
        has_email=_email_parts(folder),
        fragments=frozenset(b for b in lists if (folder / "fragments" / f"{b}.html").is_file()),
        fragment_variants=frozenset(
            n for n in cached_names(lists) if "~" in n and (folder / "fragments" / f"{n}.html").is_file()
        ),
        forms=forms,
        images=images,
        countdowns=countdowns,
        zones=zones,
        experiments=tuple(experiments.values()),
        click_default=click_default,
        measured=bool(experiments)
        or click_default is not None
        or any(b.decider is not None for b in lists.values())
        or any(b.decider is not None for b in images.values()),
    )


def _variant_links(block: ImageBlock) -> bool:
    return block.decider is not None and any(v.link is not None for v in block.decider.variants.values())


def _click_default(meta: dict[str, Any], path: Path) -> str | None:
    value = meta.get("click_default")
    if value is not None and not (_is_https_url(value) and safe_target(value, _hosts_of(value))):
        raise CampaignError(f"{path} [campaign]: click_default must be an absolute https URL")
    return value


def _hosts_of(url: str) -> frozenset[str]:
    return frozenset({(urlsplit(url).hostname or "").lower()})


def _image_block(
    name: str, spec: dict[str, Any], where: str, *, static_dir: Path, budget_ms: int
) -> ImageBlock:
    """An image block; ``link`` (an https URL) is where a click on it goes (``/click/<block>/0``)."""
    own = {k: v for k, v in spec.items() if k != "link"}
    link = spec.get("link")
    if link is not None and not (_is_https_url(link) and safe_target(link, _hosts_of(link))):
        raise CampaignError(f"{where}: link must be an absolute https URL")
    return dataclasses.replace(image_block(name, own, static_dir, where, budget_ms), link=link)


@dataclass(frozen=True, slots=True)
class Site:
    """What list blocks of one campaign need from outside their own table."""

    static_dir: Path
    public_base_url: str  # without a trailing slash
    zones: Zones
    default_budget_ms: int


def _zones(meta: dict[str, Any], where: str) -> Zones:
    try:
        zone = parse_zone(meta.get("zone", "UTC"))
    except FormatError as exc:
        raise CampaignError(f"{where} zone: {exc}") from None
    field = meta.get("zone_field")
    return Zones(zone, () if field is None else _dotted(field, f"{where} zone_field"))


def _meta_str(meta: dict[str, Any], key: str, path: Path, *, default: str) -> str:
    value = meta.get(key, default)
    if not isinstance(value, str):
        raise CampaignError(f"{path} [campaign]: {key} must be a string")
    return value


def _sender(meta: dict[str, Any], path: Path) -> Mailbox | None:
    if "from" not in meta:
        return None
    try:
        return parse_mailbox(_meta_str(meta, "from", path, default=""))
    except AddressError as exc:
        raise CampaignError(f"{path} [campaign]: from {exc}") from None


def _email_parts(folder: Path) -> bool:
    present = [part for part in EMAIL_PARTS if (folder / part).is_file()]
    if present and len(present) != len(EMAIL_PARTS):
        missing = ", ".join(p for p in EMAIL_PARTS if p not in present)
        raise CampaignError(f"{folder}: an email needs all three parts; missing {missing}")
    return bool(present)


def _list_block(name: str, spec: dict[str, Any], where: str, *, site: Site) -> ListBlock:
    known = {"kind", "source", "fields", "max_items", "budget_ms", "cache_ttl_seconds", "fallback"}
    known |= {"click", "click_hosts"}
    unknown = sorted(set(spec) - known)
    if unknown:
        raise CampaignError(f"{where}: unknown key(s) {', '.join(unknown)}")
    source = _dotted(spec.get("source"), f"{where} source")
    fields_spec = _table(spec.get("fields"), f"{where}.fields")
    if not fields_spec:
        raise CampaignError(f"{where}.fields: declare at least one field")
    fields = tuple(_item_field(n, s, site, f"{where}.fields.{n}") for n, s in fields_spec.items())
    max_items = _int_in(spec.get("max_items", 10), 1, MAX_ITEMS_CAP, f"{where} max_items")
    budget = _int_in(spec.get("budget_ms", site.default_budget_ms), 1, 10_000, f"{where} budget_ms")
    ttl = spec.get("cache_ttl_seconds")
    if ttl is not None:
        ttl = float(_int_in(ttl, 1, 86_400, f"{where} cache_ttl_seconds"))
    fallback = _fallback(spec.get("fallback"), site, fields, where)
    click_field, hosts = _click(spec, fields, where)
    if click_field is not None:  # fallback items get click URLs too (to the fallback's own links)
        fallback = with_clicks(fallback, click_field, hosts)[0]
    return ListBlock(
        name,
        source,
        fields,
        max_items,
        budget / 1000,
        ttl,
        fallback,
        site.zones,
        click_field=click_field,
        click_hosts=hosts,
        family=name.partition("~")[0] if "~" in name else "",
    )


def _click(
    spec: dict[str, Any], fields: tuple[ItemField, ...], where: str
) -> tuple[str | None, frozenset[str]]:
    """``click = "<url field>"``: items carry a ``click`` URL (``/click/<block>/<slot>``) that leads to
    that field's link as shown at open time, on one of ``click_hosts`` (default: the field's base host)."""
    name = spec.get("click")
    if name is None:
        if "click_hosts" in spec:
            raise CampaignError(f'{where}: click_hosts needs click = "<url field>"')
        return None, frozenset()
    field = next((f for f in fields if f.name == name), None)
    if field is None or field.type != "url":
        raise CampaignError(f"{where}: click must name a field of type url (got {name!r})")
    if any(f.name == "click" for f in fields):
        raise CampaignError(f"{where}: a field named click would be replaced by the click URL")
    hosts = spec.get("click_hosts")
    if hosts is None:
        base_host = urlsplit(field.base).hostname if field.base else None
        if base_host is None:
            raise CampaignError(f"{where}: click_hosts = [...] is required when the {name} field has no base")
        return name, frozenset({base_host.lower()})
    if (
        not isinstance(hosts, list)
        or not hosts
        or not all(isinstance(h, str) and _HOST.fullmatch(h) for h in hosts)
    ):
        raise CampaignError(f"{where}: click_hosts must be a list of host names such as shop.example.com")
    return name, frozenset(h.lower() for h in hosts)


def _item_field(name: str, spec: Any, site: Site, where: str) -> ItemField:
    spec = _table(spec, where)
    unknown = sorted(set(spec) - {"from", "type", "required", "default", "max_length", "base", "format"})
    if unknown:
        raise CampaignError(f"{where}: unknown key(s) {', '.join(unknown)}")
    kind = spec.get("type", "text")
    if kind not in FIELD_TYPES:
        raise CampaignError(f"{where}: type must be one of {', '.join(FIELD_TYPES)}")
    base = _base(spec.get("base"), kind, site, where)
    default = spec.get("default")
    if kind == "url" and default is not None and not _is_https_url(default):
        raise CampaignError(f"{where}: default of a url field must be an absolute https URL")
    field = ItemField(
        name=name,
        path=_field_path(spec.get("from", name), f"{where} from"),
        type=kind,
        required=bool(spec.get("required", True)),
        default=default,
        max_length=_int_in(spec.get("max_length", 200), 1, 10_000, f"{where} max_length"),
        base=base,
        format=_format(spec.get("format"), kind, where),
    )
    if field.format is None or default is None:
        return field
    shown = fallback_value(field, default, site.zones.default)  # a default shows formatted too
    if shown is MISSING:
        raise CampaignError(f"{where}: default {default!r} does not fit type = {kind}")
    return dataclasses.replace(field, default=shown)


def _base(base: Any, kind: str, site: Site, where: str) -> str | None:
    if base is None:
        return None
    if kind != "url":
        raise CampaignError(f'{where}: base is only valid for type = "url"')
    if isinstance(base, str) and base.startswith("/") and not base.startswith("//"):
        # A path: files this server serves itself (static/), under its configured public URL.
        return f"{site.public_base_url}{base}"
    if not _is_https_url(base):
        raise CampaignError(f"{where}: base must be an absolute https URL, or a path such as /static/...")
    return str(base)


def _format(spec: Any, kind: str, where: str) -> Format | None:
    if spec is None:  # a datetime field without a format carries ISO 8601 in UTC
        return parse_format("iso") if kind == "datetime" else None
    try:
        fmt = parse_format(spec)
    except FormatError as exc:
        raise CampaignError(f"{where}: {exc}") from None
    if kind not in FORMATTABLE[fmt.takes]:
        types = " or ".join(FORMATTABLE[fmt.takes])
        raise CampaignError(f"{where}: format {spec!r} needs type = {types} (this field is {kind})")
    return fmt


def _fallback(value: Any, site: Site, fields: tuple[ItemField, ...], where: str) -> bytes:
    static_dir = site.static_dir
    if not isinstance(value, str):
        raise CampaignError(f"{where}: fallback must name a JSON file under the static folder")
    path = (static_dir / value).resolve()
    if not path.is_relative_to(static_dir.resolve()):
        raise CampaignError(f"{where}: fallback {value!r} points outside the static folder")
    try:
        raw = path.read_bytes()
        data = orjson.loads(raw)
    except (OSError, orjson.JSONDecodeError) as exc:
        raise CampaignError(f"{where}: fallback {path}: {exc}") from None
    if len(raw) > MAX_FALLBACK_BYTES:
        raise CampaignError(f"{where}: fallback {path} is larger than {MAX_FALLBACK_BYTES} bytes")
    items = data.get("items") if isinstance(data, dict) else None
    if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
        raise CampaignError(f'{where}: fallback {path} must be {{"items": [objects]}}')
    # The same rules as live items: URLs complete (relative ones joined to the field's base), values
    # formatted for display, so the fallback reads like the data it stands in for.
    for index, item in enumerate(items):
        for field in fields:
            if field.name not in item:
                continue
            shown = fallback_value(field, item[field.name], site.zones.default)
            if shown is MISSING:
                what = (
                    "is not a complete https URL"
                    if field.type == "url"
                    else f"does not fit type = {field.type}"
                )
                raise CampaignError(f"{where}: fallback item {index} {field.name} {what}")
            item[field.name] = shown
    return orjson.dumps(data)


def _table(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise CampaignError(f"{where}: expected a table")
    return value


def _dotted(value: Any, where: str) -> tuple[str, ...]:
    if not isinstance(value, str) or not value:
        raise CampaignError(f"{where}: expected a dotted path such as 'cart.items' ('.' for the root)")
    return () if value == "." else tuple(value.split("."))


def _field_path(value: Any, where: str) -> tuple[str, ...]:
    path = _dotted(value, where)
    if not path:  # "." is the whole item: a dict, never a text, number, bool or URL
        raise CampaignError(f"{where}: expected a field of the item such as 'price' or 'sku.code', not '.'")
    return path


def _int_in(value: Any, low: int, high: int, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise CampaignError(f"{where}: expected an integer from {low} to {high}")
    return value


def _is_https_url(value: Any) -> bool:
    if not isinstance(value, str):
        return False
    parts = urlsplit(value)
    return parts.scheme == "https" and bool(parts.hostname)
