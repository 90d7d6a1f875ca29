"""Campaign definitions: ``amp_templates/<campaign>/blocks.toml`` and their static fallbacks.

A campaign declares its dynamic blocks: ``list`` blocks (below), ``form`` blocks (``app.campaigns.forms``) and
``image`` blocks (``app.images.blocks``) and ``countdown`` blocks (``app.countdown.blocks``).
A ``list`` block says which profile data it reads (``source``, a dotted path into the profile
attributes), how each item is shaped (``fields``), how many items it keeps, its open-time budget and
the static fallback JSON served when the data is late, missing or the token is bad. Everything is
validated at load time, so a mistake is an error naming the file and the block, never a broken email
at open time.
"""

from __future__ import annotations

import dataclasses
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import orjson

from app.campaigns.forms import FormBlock, form_block
from app.countdown.blocks import CountdownBlock, countdown_block
from app.errors import CampaignError
from app.images.blocks import image_block
from app.images.layout import ImageBlock
from app.render.addresses import AddressError, Mailbox, parse_mailbox
from app.render.json import Shaper, compile_shaper

CAMPAIGN_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,39}")
BLOCK_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,39}")
FieldType = Literal["text", "number", "integer", "bool", "url"]
FIELD_TYPES: tuple[str, ...] = ("text", "number", "integer", "bool", "url")
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


@dataclass(frozen=True, slots=True)
class ListBlock:
    name: str
    source: tuple[str, ...]
    fields: tuple[ItemField, ...]
    max_items: int
    budget_s: float
    cache_ttl_s: float | None
    fallback_body: bytes
    # The fields compiled into one shaping function (app.render.json), once here, not on every open.
    shape: Shaper = dataclasses.field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "shape", compile_shaper(self.fields))


EMAIL_PARTS = ("email.txt", "email.amp.html", "email.html")


@dataclass(frozen=True, slots=True)
class Campaign:
    name: str
    title: str
    lists: Mapping[str, ListBlock]
    subject: str = ""
    sender: Mailbox | None = None  # [campaign] from: the From of its .eml output
    has_email: bool = False  # email.txt, email.amp.html and email.html are all present
    fragments: frozenset[str] = frozenset()  # list blocks with fragments/<block>.html
    forms: Mapping[str, FormBlock] = dataclasses.field(
        default_factory=dict
    )  # amp-form blocks (app.campaigns.forms)
    images: Mapping[str, ImageBlock] = dataclasses.field(default_factory=dict)  # image blocks (app.images)
    countdowns: Mapping[str, CountdownBlock] = dataclasses.field(default_factory=dict)  # countdown timers

    def template(self, part: str) -> str:
        """Template name (relative to the templates folder) of an email part or fragment."""
        return f"{self.name}/{part}"


def load_campaigns(templates_dir: Path, static_dir: Path, *, default_budget_ms: int) -> dict[str, Campaign]:
    """Load every campaign folder that has a blocks.toml."""
    if not templates_dir.is_dir():
        raise CampaignError(f"templates folder {templates_dir} does not exist")
    campaigns = {}
    for folder in sorted(p for p in templates_dir.iterdir() if (p / "blocks.toml").is_file()):
        campaigns[folder.name] = load_campaign(folder, static_dir, default_budget_ms=default_budget_ms)
    return campaigns


def load_campaign(folder: Path, static_dir: Path, *, default_budget_ms: int) -> Campaign:
    name = folder.name
    path = folder / "blocks.toml"
    if not CAMPAIGN_NAME.fullmatch(name):
        raise CampaignError(f"{folder}: campaign folder names must match {CAMPAIGN_NAME.pattern}")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise CampaignError(f"{path}: {exc}") from None
    meta = _table(data.get("campaign", {}), f"{path} [campaign]")
    unknown_meta = sorted(set(meta) - {"title", "subject", "from"})
    if unknown_meta:
        raise CampaignError(f"{path} [campaign]: unknown key(s) {', '.join(unknown_meta)}")
    blocks = _table(data.get("blocks", {}), f"{path} [blocks]")
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
            lists[block_name] = _list_block(block_name, spec, static_dir, where, default_budget_ms)
        elif kind == "form":
            forms[block_name] = form_block(block_name, spec, where)
        elif kind == "image":
            images[block_name] = image_block(block_name, spec, static_dir, where, default_budget_ms)
        elif kind == "countdown":
            countdowns[block_name] = countdown_block(block_name, spec, static_dir, where, default_budget_ms)
        else:
            raise CampaignError(f"{where}: unknown kind {kind!r} (supported: list, form, image, countdown)")
    return Campaign(
        name=name,
        title=_meta_str(meta, "title", path, default=name),
        lists=lists,
        subject=_meta_str(meta, "subject", path, default=""),
        sender=_sender(meta, path),
        has_email=_email_parts(folder),
        fragments=frozenset(b for b in lists if (folder / "fragments" / f"{b}.html").is_file()),
        forms=forms,
        images=images,
        countdowns=countdowns,
    )


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


def _list_block(name: str, spec: dict[str, Any], static_dir: Path, where: str, budget_ms: int) -> ListBlock:
    known = {"kind", "source", "fields", "max_items", "budget_ms", "cache_ttl_seconds", "fallback"}
    unknown = sorted(set(spec) - known)
    if unknown:
        raise CampaignError(f"{where}: unknown key(s) {', '.join(unknown)}")
    source = _dotted(spec.get("source"), f"{where} source")
    fields_spec = _table(spec.get("fields"), f"{where}.fields")
    if not fields_spec:
        raise CampaignError(f"{where}.fields: declare at least one field")
    fields = tuple(_item_field(n, s, f"{where}.fields.{n}") for n, s in fields_spec.items())
    max_items = _int_in(spec.get("max_items", 10), 1, MAX_ITEMS_CAP, f"{where} max_items")
    budget = _int_in(spec.get("budget_ms", budget_ms), 1, 10_000, f"{where} budget_ms")
    ttl = spec.get("cache_ttl_seconds")
    if ttl is not None:
        ttl = float(_int_in(ttl, 1, 86_400, f"{where} cache_ttl_seconds"))
    fallback = _fallback(spec.get("fallback"), static_dir, fields, where)
    return ListBlock(name, source, fields, max_items, budget / 1000, ttl, fallback)


def _item_field(name: str, spec: Any, where: str) -> ItemField:
    spec = _table(spec, where)
    unknown = sorted(set(spec) - {"from", "type", "required", "default", "max_length", "base"})
    if unknown:
        raise CampaignError(f"{where}: unknown key(s) {', '.join(unknown)}")
    kind = spec.get("type", "text")
    if kind not in FIELD_TYPES:
        raise CampaignError(f"{where}: type must be one of {', '.join(FIELD_TYPES)}")
    base = spec.get("base")
    if base is not None and not _is_https_url(base):
        raise CampaignError(f"{where}: base must be an absolute https URL")
    if base is not None and kind != "url":
        raise CampaignError(f'{where}: base is only valid for type = "url"')
    default = spec.get("default")
    if kind == "url" and default is not None and not _is_https_url(default):
        raise CampaignError(f"{where}: default of a url field must be an absolute https URL")
    return ItemField(
        name=name,
        path=_field_path(spec.get("from", name), f"{where} from"),
        type=kind,
        required=bool(spec.get("required", True)),
        default=default,
        max_length=_int_in(spec.get("max_length", 200), 1, 10_000, f"{where} max_length"),
        base=base,
    )


def _fallback(value: Any, static_dir: Path, fields: tuple[ItemField, ...], where: str) -> bytes:
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
    url_fields = [f.name for f in fields if f.type == "url"]
    for index, item in enumerate(items):
        for field in url_fields:
            if field in item and not _is_https_url(item[field]):
                raise CampaignError(f"{where}: fallback item {index} {field} is not an absolute https URL")
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
