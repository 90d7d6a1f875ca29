"""GIF89a written piece by piece, so an animation can be spliced from image blocks encoded in advance.

A GIF is a header (size and one global palette), then per frame a Graphic Control Extension (delay,
disposal) and an image block (a rectangle at an offset, LZW-compressed), then a trailer. Every piece
is self-contained bytes, so frames encoded once can be joined into many files. Pillow's C encoder
does the LZW (``Image.tobytes("gif", ...)``: the data sub-blocks only), with the smallest code size
for the palette instead of the 8 bits Pillow's own writer always uses.

No ``NETSCAPE2.0`` application extension is ever written: without it browsers (Chromium, Firefox,
WebKit) and Pillow play an animation once and rest on its last frame.
"""

from __future__ import annotations

import struct

from PIL import Image

TRAILER = b";"
_DISPOSE_NONE = 1 << 2  # "do not dispose": the next frame draws over this one


def palette_bits(palette: bytes) -> int:
    """Bits per pixel of a palette of ``len(palette) // 3`` colours (2 to 8, as GIF requires)."""
    colours = max(len(palette) // 3, 2)
    if colours > 256:
        raise ValueError(f"a GIF palette holds at most 256 colours, got {colours}")
    return max((colours - 1).bit_length(), 2)


def header(width: int, height: int, palette: bytes) -> bytes:
    """Signature, logical screen and the global palette (padded to a power of two)."""
    bits = palette_bits(palette)
    flags = 0x80 | (bits - 1) << 4 | (bits - 1)  # global table, colour resolution, table size
    table = palette.ljust(3 << bits, b"\0")
    return b"GIF89a" + struct.pack("<HHBBB", width, height, flags, 0, 0) + table


def frame(image: Image.Image, left: int, top: int, *, delay_ms: int, bits: int) -> bytes:
    """One frame: its control extension, then ``image`` (mode P, global palette) at ``(left, top)``."""
    if image.mode != "P":
        raise ValueError(f"GIF frames are palette images, got mode {image.mode}")
    control = b"\x21\xf9\x04" + struct.pack("<BHBB", _DISPOSE_NONE, round(delay_ms / 10), 0, 0)
    descriptor = b"," + struct.pack("<HHHHBB", left, top, image.width, image.height, 0, bits)
    return control + descriptor + image.tobytes("gif", "P", bits, 0) + b"\0"
