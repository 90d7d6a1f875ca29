"""Countdown requests, content keys and the render job run in the worker pool (pure).

A countdown's pixels depend on the block, the whole seconds left (``clock.seconds_left``: None once the
deadline has passed), the format and the scale, and on nothing else: that is its content key. It holds
no clock and no deadline, so everyone who opens a campaign-wide timer in the same second shares one
GIF, and per-recipient timers share theirs whenever they have the same time left.

GIF is the animated timer (``app.images.timer_gif``). PNG and JPEG are its first frame as a still (for
clients or layouts that want a still image); the first frame always reads correctly on its own.
"""

from __future__ import annotations

from typing import NamedTuple

from app.countdown.blocks import CountdownBlock
from app.images.layout import ImageFormat
from app.images.timer import render_still
from app.images.timer_gif import countdown_gif

# The ended image never changes: a CDN may keep a campaign-wide one for a day.
EXPIRED_CDN_TTL_SECONDS = 86_400


class CountdownRequest(NamedTuple):
    campaign: str
    block: CountdownBlock
    recipient: str | None  # None: a campaign-wide token (enough for a block with a fixed deadline)
    fmt: ImageFormat
    scale: int


def timer_key(request: CountdownRequest, left: int | None) -> str:
    """``t<block digest>.<seconds left or "ended">.<format><scale>``: also the ETag, so nothing personal.

    The block's digest hashes its whole table (style and deadline), so no campaign name is needed: two
    blocks with the same table draw the same pixels.
    """
    return f"t{request.block.digest}.{'ended' if left is None else left}.{request.fmt}{request.scale}"


def render_timer(block: CountdownBlock, fmt: ImageFormat, scale: int, left: int | None) -> bytes:
    """The animated GIF at ``left`` seconds left (None: ended), or its first frame as a PNG or JPEG."""
    style = block.styles[scale]
    if fmt == "gif":
        return countdown_gif(style, left)
    return render_still(style, left, fmt)
