"""A countdown GIF in a real headless Chromium: it counts down once and rests on its last frame.

Most webmail is read in Chromium. The page shows the GIF as an ``<img>``; screenshots taken for longer
than the animation are read back digit by digit against the style's glyphs. The same frames written
with a loop (what a timer was before) are the control: there the digits jump back up, so the test can
tell the two apart.
"""

from __future__ import annotations

import base64
import io
import itertools
import time

import pytest
from PIL import Image

from app.images.timer import CountdownStyle, day_digits, digit_text, first_frame, load_face
from app.images.timer_gif import countdown_gif
from tests.test_countdown import FONT, read_digits
from tests.test_preview_browser import browser_tools, chromium  # noqa: F401 (browser_tools is a fixture)

LEFT = 50  # three frames: 00:00:00:50, :49, :48
WATCH_SECONDS = 6.5


def looping(style: CountdownStyle, left: int) -> bytes:
    """The same frames written by Pillow with a NETSCAPE2.0 loop (how a timer looped before)."""
    face = load_face(style)
    frames = [first_frame(face, digit_text(left - i, day_digits(left))) for i in range(style.frame_count)]
    out = io.BytesIO()
    frames[0].save(out, "GIF", save_all=True, append_images=frames[1:], duration=1000, loop=0)
    return out.getvalue()


def watch(gifs: dict[str, bytes], style: CountdownStyle) -> dict[str, list[int]]:
    """The seconds each GIF shows, read from screenshots about every 200 ms for ``WATCH_SECONDS``."""
    images = "".join(
        f'<img id="{name}" src="data:image/gif;base64,{base64.b64encode(data).decode()}"'
        f' width="{style.width}" height="{style.height}" style="display:block">'
        for name, data in gifs.items()
    )
    seen: dict[str, list[int]] = {name: [] for name in gifs}
    with chromium() as browser:
        page = browser.new_page(viewport={"width": style.width, "height": 2 * style.height})
        page.set_content(f"<body style='margin:0'>{images}</body>")
        page.wait_for_function(f"Array.from(document.images).every(i => i.complete) && {len(gifs)}")
        ends = time.monotonic() + WATCH_SECONDS
        while time.monotonic() < ends:
            for name in gifs:
                shot = Image.open(io.BytesIO(page.locator(f"#{name}").screenshot())).convert("RGB")
                seen[name].append(int(read_digits(style, shot)))
            time.sleep(0.2)
    return seen


@pytest.mark.server
@pytest.mark.usefixtures("browser_tools")
def test_chromium_counts_down_once_and_rests_on_the_last_frame() -> None:
    style = CountdownStyle(font_path=FONT, frame_count=3)
    seen = watch({"once": countdown_gif(style, LEFT), "looped": looping(style, LEFT)}, style)
    once, looped = seen["once"], seen["looped"]
    assert once[0] in (LEFT, LEFT - 1) and once[-1] == LEFT - 2  # the first shot may come a second late
    assert all(later <= earlier for earlier, later in itertools.pairwise(once)), once
    assert any(later > earlier for earlier, later in itertools.pairwise(looped)), looped
