"""The opentime app as ``opentime serve`` runs it (uvicorn, httptools, uvloop), with an exposure sink.

    python3 bench/decisions_server.py --config opentime.toml [--record]

For ``bench/decisions.py`` only: ``--record`` gives the Services a recording exposure sink, the
non-blocking front half every real recorder has (append to a bounded in-memory queue of 1,000: a
writer draining it every 50 ms holds about that many at 20,000 opens a second; older ones are
dropped here instead), so the hot path pays what recording costs. Without it the default
``NullSink`` stays. Both ways the app is wrapped the same (one extra call per request), so the two
servers differ only in the sink and in the campaign's rules. ``GET /bench/exposures`` answers how
many exposures the sink was given (0 without ``--record``).
"""

from __future__ import annotations

import argparse
from collections import deque
from pathlib import Path
from typing import Any

import uvicorn

from app.app import create_app
from app.asgi import Receive, Scope, Send, send_bytes
from app.config import load_settings
from app.decisions.exposure import Exposure
from app.gc_policy import tune_for_serving
from app.serving import protocol


class QueueSink:
    def __init__(self, size: int) -> None:
        self.queue: deque[Exposure] = deque(maxlen=size)
        self.count = 0

    def record(self, exposure: Exposure) -> None:
        self.count += 1
        self.queue.append(exposure)


class WithSink:
    """Sets the sink on the Services at the first request (they are built in the lifespan)."""

    def __init__(self, app: Any, sink: QueueSink | None) -> None:
        self.app, self.sink, self.ready = app, sink, False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not self.ready and scope["type"] == "http":
            if self.sink is not None:
                object.__setattr__(scope["state"]["services"], "exposures", self.sink)
            self.ready = True
        if scope["type"] == "http" and scope["path"] == "/bench/exposures":
            count = b"%d" % (0 if self.sink is None else self.sink.count)
            await send_bytes(send, 200, [(b"content-type", b"text/plain")], count)
            return
        await self.app(scope, receive, send)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--config", required=True)
    parser.add_argument("--record", action="store_true")
    args = parser.parse_args()
    settings = load_settings({}, Path(args.config)).settings
    tune_for_serving()  # as serve_app does
    sink = QueueSink(1_000) if args.record else None
    uvicorn.run(
        WithSink(create_app(settings), sink),
        host=settings.host,
        port=settings.port,
        loop="uvloop",
        http=protocol(settings),
        proxy_headers=True,
        forwarded_allow_ips=settings.forwarded_allow_ips,
        access_log=False,
        log_level="warning",
        server_header=False,
    )


if __name__ == "__main__":
    main()
