"""Countdown requests, content keys and the render job run in the worker pool (pure).

A countdown's pixels depend on the block, the deadline instant, the bucket's start, the format and the
scale, and on nothing else: that is its content key. A campaign-wide timer therefore has one key per
bucket for everyone; per-recipient timers with the same deadline share theirs too. From the deadline
on every recipient gets the block's one expired image.

GIF is the animated timer. PNG and JPEG are its first frame as a still (for clients or layouts that
want a still image); the first frame always reads correctly on its own.
"""

from __future__ import annotations

import hashlib
from datetime import datetime
from typing import NamedTuple

from app.countdown.blocks import CountdownBlock
from app.countdown.clock import Bucket
from app.images.layout import ImageFormat
from app.images.timer import render_countdown, render_still

# The expired image never changes: a CDN may keep a campaign-wide one for a day.
EXPIRED_CDN_TTL_SECONDS = 86_400


class CountdownRequest(NamedTuple):
    campaign: str
    block: CountdownBlock
    recipient: str | None  # None: a campaign-wide token (enough for a block with a fixed deadline)
    fmt: ImageFormat
    scale: int


def timer_key(request: CountdownRequest, deadline: datetime, bucket: Bucket) -> str:
    block = request.block
    moment = "expired" if bucket.until is None else f"{deadline.timestamp()}|{bucket.start.timestamp()}"
    text = f"cd|{request.campaign}|{block.name}|{block.digest}|{moment}|{request.fmt}|{request.scale}"
    return "c" + hashlib.sha256(text.encode()).hexdigest()[:31]


def render_timer(
    block: CountdownBlock, fmt: ImageFormat, scale: int, deadline: datetime, at: datetime
) -> bytes:
    """The animated GIF at ``at``, or its first frame as a PNG or JPEG still."""
    style = block.styles[scale]
    if fmt == "gif":
        return render_countdown(style, deadline, at)
    return render_still(style, deadline, at, fmt)
