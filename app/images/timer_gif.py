"""The animated countdown: one GIF per number of seconds left, spliced from frames encoded in advance.

``countdown_gif(style, left)`` shows ``left`` in frame 0 and one second less in each later frame, one
frame a second, and plays once: it rests on its last frame (or on zero), so it never counts up again.
The bytes depend on the style and ``left`` only, never on the clock or the deadline, so every request
that has the same number of seconds left can share them.

Frame 0 is the whole picture (classic Outlook shows only the first frame), encoded for each ``left``.
Every later frame redraws only the digits that changed, as a small rectangle at their place; what changes
from one second to the next repeats (the seconds' ones digit 54 times a minute, the tens 5 times, then
minutes, hours, days), so each such rectangle is encoded once per style and reused by every GIF: a new
second costs one full-frame encode (about 0.5 ms at 600x120) and a join.
"""

from __future__ import annotations

import threading
from functools import lru_cache

from PIL import Image, ImageChops

from app.images import gif
from app.images.timer import CountdownStyle, Face, day_digits, digit_text, first_frame, load_face

FRAME_MS = 1000


class Splicer:
    """A style's header and its delta frames, each encoded once (keyed by what changed)."""

    def __init__(self, face: Face) -> None:
        style = face.style
        self.face = face
        self._bits = gif.palette_bits(style.palette())
        self._header = gif.header(style.width, style.height, style.palette())
        self._base = face.base()
        self._deltas: dict[tuple[int, str, str], bytes] = {}
        self._lock = threading.Lock()  # encodes each delta once when two worker threads want it
        # Per layout (two or three day digits): the frames for the seconds within a minute, where
        # ``steps[s]`` turns second s + 1 into s; only a minute's turn needs a look-up of its own.
        self._steps = {digits: self._minute_steps(digits) for digits in (2, 3)}

    def gif(self, left: int) -> bytes:
        digits = day_digits(left)
        parts = [self._header, self._first(digit_text(left, digits))]
        steps = self._steps[digits]
        value, frames = left, min(self.face.style.frame_count, left + 1) - 1
        while frames:
            second = value % 60
            run = min(second, frames)
            if run:  # within the minute: second -> second - 1 -> ... -> second - run
                parts += reversed(steps[second - run : second])
            else:  # the minute turns: xx:00 -> (xx - 1):59, and maybe hours and days
                run = 1
                parts.append(self.delta(digits, digit_text(value, digits), digit_text(value - 1, digits)))
            value -= run
            frames -= run
        parts.append(gif.TRAILER)
        return b"".join(parts)

    def _first(self, text: str) -> bytes:
        frame = first_frame(self.face, text, self._base)
        return gif.frame(frame, 0, 0, delay_ms=FRAME_MS, bits=self._bits)

    def delta(self, digits: int, old: str, new: str) -> bytes:
        """The frame that turns the digits ``old`` into ``new``: only the rectangle of pixels that differ."""
        changed = len(old) - 1
        while old[:changed] != new[:changed]:
            changed -= 1
        key = (digits, old[changed:], new[changed:])
        found = self._deltas.get(key)
        if found is None:
            with self._lock:
                found = self._deltas.get(key) or self._encode_delta(*key)
                self._deltas[key] = found
        return found

    def _minute_steps(self, digits: int) -> list[bytes]:
        texts = [digit_text(second, digits) for second in range(60)]
        return [self.delta(digits, texts[second + 1], texts[second]) for second in range(59)]

    def _encode_delta(self, digits: int, old: str, new: str) -> bytes:
        cells = self.face.cells(digits)[-len(new) :]
        before, after = self._digits_strip(cells, old), self._digits_strip(cells, new)
        box = ImageChops.difference(before, after).getbbox() or (0, 0, 1, 1)
        left, top = cells[0][0] + box[0], cells[0][1] + box[1]
        return gif.frame(after.crop(box), left, top, delay_ms=FRAME_MS, bits=self._bits)

    def _digits_strip(self, cells: list[tuple[int, int]], text: str) -> Image.Image:
        """The digit row from the first of ``cells`` to the last, showing ``text``."""
        face = self.face
        left = cells[0][0]
        strip = face.canvas(cells[-1][0] + face.cell[0] - left, face.cell[1])
        for (x, _), digit in zip(cells, text, strict=True):
            strip.paste(face.digits[digit], (x - left, 0))
        return strip


@lru_cache(maxsize=64)
def splicer(style: CountdownStyle) -> Splicer:
    return Splicer(load_face(style))


def countdown_gif(style: CountdownStyle, left: int | None) -> bytes:
    """The animated timer at ``left`` whole seconds left; None (the deadline has passed): the ended image."""
    if left is None:
        return load_face(style).expired_gif
    if left < 0:
        raise ValueError(f"seconds left must be >= 0, got {left}")
    return splicer(style).gif(left)
