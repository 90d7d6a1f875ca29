"""The opentime app as ``opentime serve`` runs it (uvicorn, httptools, uvloop), with a count of exposures.

    python3 bench/decisions_server.py --config opentime.toml

For ``bench/decisions.py`` only. The exposure recorder is the real one (``app.reports.recorder``,
with its settings: sampling, buffer, the flush into the store's hourly counters every
``exposure_flush_seconds``), so the hot path and the flushes pay what recording costs in production.
A campaign that measures nothing (the shipped ``demo``) records nothing. ``GET /bench/exposures``
answers how many exposures the recorder kept and how many it dropped (its buffer was full); the
wrapper adds one call per request to every server run this way, on and off alike.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import uvicorn

from app.app import create_app
from app.asgi import Receive, Scope, Send, send_bytes
from app.config import load_settings
from app.gc_policy import tune_for_serving
from app.reports.recorder import ExposureRecorder
from app.serving import uvicorn_options


class Counted:
    """Answers ``/bench/exposures`` with the recorder's count; everything else goes to the app."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] == "/bench/exposures":
            recorder = scope["state"]["services"].exposures
            stats = recorder.stats if isinstance(recorder, ExposureRecorder) else None
            counts = (0, 0) if stats is None else (stats.recorded, stats.dropped)
            await send_bytes(send, 200, [(b"content-type", b"text/plain")], b"%d %d" % counts)
            return
        await self.app(scope, receive, send)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--config", required=True)
    args = parser.parse_args()
    settings = load_settings({}, Path(args.config)).settings
    tune_for_serving()  # as serve_app does
    options = uvicorn_options(settings.replace(access_log=False, log_level="warning"))
    uvicorn.run(Counted(create_app(settings)), **options)


if __name__ == "__main__":
    main()
