"""The amp-lists of an AMP part as a reader sees them: fetched from the server, expanded by mustache.js.

What amp-list does with the JSON (https://amp.dev/documentation/components/amp-list): ``items``
(default ``"items"``, ``"."`` for the whole response, or a dotted path) picks the array,
``single-item`` wraps an object into one, ``max-items`` truncates, and the
``<template type="amp-mustache">`` renders once per item, into a ``div role="list"`` that replaces
the placeholder and fallback.
"""

from __future__ import annotations

import dataclasses
import html
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from app.campaigns.sendtime import SendTime
from app.config import Settings
from app.security.keyring import load_keyring
from app.security.tokens import TokenSigner
from app.services import load_campaigns_for, load_templates
from tests.amp_tools import Mustache
from tests.conftest import SENDER
from tests.servers import free_port, running

AMP_LIST = re.compile(r"<amp-list\b([^>]*)>(.*?)</amp-list>", re.S)
TEMPLATE = re.compile(r'<template type="amp-mustache">(.*?)</template>', re.S)
ATTRIBUTE = re.compile(r'([a-z][a-z0-9-]*)(?:="([^"]*)")?')
TAG = re.compile(r"<[^>]+>")


@dataclass(frozen=True, slots=True)
class AmpList:
    attributes: dict[str, str]
    template: str
    span: tuple[int, int]  # where the whole <amp-list> element sits in the document

    @property
    def src(self) -> str:
        return self.attributes["src"]

    def items(self, data: Any) -> list[Any]:
        """The items amp-list would render from the response ``data``."""
        path = self.attributes.get("items", "items")
        picked = data
        if path != ".":
            for key in path.split("."):
                picked = picked[key]
        if "single-item" in self.attributes:
            picked = [picked]
        limit = self.attributes.get("max-items")
        return list(picked[: int(limit)] if limit else picked)


def amp_lists(amp: str) -> list[AmpList]:
    found = []
    for match in AMP_LIST.finditer(amp):
        attributes = {name: html.unescape(value or "") for name, value in ATTRIBUTE.findall(match.group(1))}
        template = TEMPLATE.search(match.group(2))
        assert template is not None, f"amp-list without an amp-mustache template: {attributes}"
        found.append(AmpList(attributes, template.group(1), match.span()))
    return found


def fetch(client: httpx.Client, url: str) -> Any:
    """The amp-list JSON as a mail client gets it (AMP CORS version 2)."""
    response = client.get(url, headers={"AMP-Email-Sender": SENDER})
    assert response.status_code == 200, (url, response.status_code)
    assert response.headers["content-type"] == "application/json"
    return response.json()


@dataclass(frozen=True, slots=True)
class Expanded:
    element: AmpList
    data: Any  # the JSON the server answered
    rendered: list[str]  # one string per item, as mustache.js renders it


def expand(amp: str, client: httpx.Client, mustache: Mustache) -> list[Expanded]:
    """Fetch every amp-list of ``amp`` and render its template for each item (one node run)."""
    elements = amp_lists(amp)
    datas = [fetch(client, element.src) for element in elements]
    jobs = [(e.template, item) for e, data in zip(elements, datas, strict=True) for item in e.items(data)]
    rendered = iter(mustache.render_many(jobs))
    return [
        Expanded(e, data, [next(rendered) for _ in e.items(data)])
        for e, data in zip(elements, datas, strict=True)
    ]


def substituted(amp: str, expanded: list[Expanded]) -> str:
    """The document with each amp-list's children replaced by its rendered items, as amp-list does."""
    out, last = [], 0
    for one in expanded:
        start, end = one.element.span
        opening = amp[start : amp.index(">", start) + 1]
        out += [amp[last:start], opening, '<div role="list">', "".join(one.rendered), "</div></amp-list>"]
        last = end
    return "".join([*out, amp[last:]])


def visible_text(markup: str) -> str:
    """Text a reader sees: tags dropped (as spaces), entities decoded, whitespace collapsed."""
    without = re.sub(r"<(title|style|script|template)\b.*?</\1>", " ", markup, flags=re.S)
    without = re.sub(r'<div style="display:none[^"]*">.*?</div>', " ", without, flags=re.S)  # preheader
    return " ".join(html.unescape(TAG.sub(" ", without)).split())


@dataclass(frozen=True, slots=True)
class Reader:
    """A real server and the send-time renderer minting URLs for it (same key ring, same base URL)."""

    base_url: str
    sendtime: SendTime
    client: httpx.Client


@contextmanager
def reader_server(settings: Settings, tmp_path: Path) -> Iterator[Reader]:
    """``opentime serve`` on 127.0.0.1 with its own http base URL (allowed for localhost), so every URL
    the email carries, amp-list sources and product images alike, reaches this server."""
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    config = tmp_path / "reader.toml"
    config.write_text(
        f'public_base_url = "{base_url}"\n'
        f'keys_file = "{settings.keys_file}"\n'
        f'database_url = "{settings.database_url}"\n'
        f'allowed_senders = ["{SENDER}"]\n'
        f"port = {port}\n"
    )
    served = dataclasses.replace(settings, public_base_url=base_url)
    campaigns = load_campaigns_for(served)
    signer = TokenSigner(load_keyring(settings.keys_file))
    sendtime = SendTime(load_templates(served, campaigns), campaigns, signer, base_url, time.time)
    with running(["serve", "--config", str(config)], port, tmp_path / "reader.log"), httpx.Client() as client:
        yield Reader(base_url, sendtime, client)
