"""Helpers for the image tests: a campaign folder written on the fly, image decoding."""

from __future__ import annotations

import io
from pathlib import Path

from PIL import Image

from app.campaigns.loader import Campaign, load_campaign
from app.config import PROJECT_ROOT

STATIC = PROJECT_ROOT / "static"

GREETING = """
[blocks.hello]
kind = "image"
width = 300
height = 100
background = "#102030"
budget_ms = 500
[[blocks.hello.layers]]
type = "text"
text = "Hi {{ profile.first_name | default('there') }}"
x = 10
y = 10
width = 280
height = 80
font = "bold"
size = 36
color = "#ffffff"
"""


def write_campaign(root: Path, blocks: str, name: str = "imgs") -> Path:
    folder = root / name
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "blocks.toml").write_text(blocks, encoding="utf-8")
    return folder


def campaign(root: Path, blocks: str = GREETING) -> Campaign:
    return load_campaign(
        write_campaign(root, blocks), STATIC, default_budget_ms=150, public_base_url="https://amp.example.com"
    )


def decode(body: bytes) -> Image.Image:
    """The image as a person sees it: a palette PNG (a design with few colours is written as one,
    losslessly) reads as its colours, RGBA when it has transparency."""
    image = Image.open(io.BytesIO(body))
    image.load()
    if image.format == "PNG" and image.mode == "P":
        colours = image.convert("RGBA" if "transparency" in image.info else "RGB")
        colours.format = image.format  # still the file's format, for tests that check it
        return colours
    return image
