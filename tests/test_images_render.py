"""Encoding and drawing shortcuts keep the pixels: palette PNGs, cached backgrounds and corners."""

from __future__ import annotations

import io
import random

from PIL import Image, ImageDraw

from app.images import render
from tests.test_images_helpers import decode


def _random_image(colours: int, mode: str = "RGB") -> Image.Image:
    rng = random.Random(colours)
    channels = len(mode)
    palette = [tuple(rng.randrange(256) for _ in range(channels)) for _ in range(colours)]
    image = Image.new(mode, (120, 40))
    image.putdata([palette[i % colours] for i in range(120 * 40)])
    return image


def test_an_image_with_few_colours_is_a_palette_png_with_the_same_pixels() -> None:
    image = _random_image(256)
    body = render.encode(image, "png")
    assert Image.open(io.BytesIO(body)).mode == "P"
    assert decode(body).tobytes() == image.tobytes()


def test_more_colours_or_transparency_stay_true_colour_with_the_same_pixels() -> None:
    many = _random_image(257)
    assert decode(render.encode(many, "png")).tobytes() == many.tobytes()
    see_through = _random_image(20, "RGBA")
    decoded = decode(render.encode(see_through, "png"))
    assert decoded.mode == "RGBA" and decoded.tobytes() == see_through.tobytes()


def test_rounded_corners_only_touch_the_corners() -> None:
    square = Image.new("RGBA", (200, 80), (10, 20, 30, 255))
    rounded = decode(render.plain(200, 80, (10, 20, 30, 255), "png", radius=12))
    assert rounded.getpixel((0, 0))[3] == 0 and rounded.getpixel((199, 79))[3] == 0
    assert rounded.getpixel((100, 40)) == square.getpixel((100, 40))
    assert rounded.getpixel((0, 40)) == rounded.getpixel((199, 40)) == (10, 20, 30, 255)
    # Same mask as drawing the whole rounded rectangle at once.
    mask = Image.new("L", (200, 80), 0)

    ImageDraw.Draw(mask).rounded_rectangle((0, 0, 199, 79), 12, fill=255)
    assert rounded.getchannel("A").tobytes() == mask.tobytes()
