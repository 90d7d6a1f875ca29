"""How a server process's cyclic garbage collector runs.

Every open allocates short-lived containers (the ASGI scope and message dicts, the items shaped for
an amp-list body, futures) that reference counting frees as soon as the response is sent. With
CPython's default gen-0 threshold of 700 the collector still wakes every few requests to look for
cycles that are not there, and every tenth pass walks the older generations too: on the cold path
(100,000 never-seen recipients) that was ~7% of the server's CPU (bench/amp_list.py, py-spy
--native showed ``gc_collect_main``). A threshold of 20,000 makes those passes rare. Cycles are still
collected (after 20,000 net allocations instead of 700), and the requests create few of them.
"""

from __future__ import annotations

import gc

SERVER_THRESHOLDS = (20_000, 50, 100)


def tune_for_serving() -> None:
    """Apply the server's collector thresholds (once per worker process, before it serves)."""
    gc.set_threshold(*SERVER_THRESHOLDS)
