"""``DeadlineProtocol`` inside a real in-process uvicorn server: at most one deadline timer per
connection at any time, every one of them cancelled or fired by the end, whatever order the bytes
come in (blank lines before a request, pipelined requests, a request that times out)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from functools import partial
from typing import Any, ClassVar

import uvicorn

from app.app import create_app
from app.config import Settings
from app.serving import DeadlineProtocol
from tests.servers import free_port

READ_TIMEOUT = 0.5
GET = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"


class TimerWatch:
    """The connection's event loop as the protocol sees it, counting its deadline timers."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self.handles: list[asyncio.TimerHandle] = []
        self.fired: list[asyncio.TimerHandle] = []
        self.most_alive = 0

    def alive(self) -> int:
        return sum(1 for h in self.handles if not h.cancelled() and h not in self.fired)

    def call_later(self, delay: float, callback: Callable[..., object], *args: Any) -> asyncio.TimerHandle:
        if getattr(callback, "__name__", "") != "_timed_out":
            return self._loop.call_later(delay, callback, *args)  # uvicorn's keep-alive timer

        def fire() -> None:
            self.fired.append(handle)
            callback(*args)

        handle = self._loop.call_later(delay, fire)
        self.handles.append(handle)
        self.most_alive = max(self.most_alive, self.alive())
        return handle

    def __getattr__(self, name: str) -> Any:
        return getattr(self._loop, name)


class Watched(DeadlineProtocol):
    watches: ClassVar[list[TimerWatch]] = []  # one server per test, read after it

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.watch = TimerWatch(self.loop)
        self.loop = self.watch  # type: ignore[assignment]
        Watched.watches.append(self.watch)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        self.watch.most_alive = max(self.watch.most_alive, self.watch.alive())


async def _responses(reader: asyncio.StreamReader, count: int) -> list[bytes]:
    answers = []
    for _ in range(count):
        head = await reader.readuntil(b"\r\n\r\n")
        length = next(
            int(v)
            for k, _, v in (h.partition(b":") for h in head.split(b"\r\n"))
            if k.lower() == b"content-length"
        )
        answers.append(head + await reader.readexactly(length))
    return answers


async def _exercise(settings: Settings) -> list[bytes]:
    port = free_port()
    made = partial(Watched, read_timeout=READ_TIMEOUT, max_connections=10)
    config = uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, http=made, log_level="warning")
    server = uvicorn.Server(config)
    serving = asyncio.create_task(server.serve())
    for _ in range(500):  # up to 5 s for the lifespan to start
        if server.started:
            break
        await asyncio.sleep(0.01)
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"\r\n\r\n")  # blank lines first: the connection's own deadline covers them
        await asyncio.sleep(0.05)
        writer.write(GET)
        answers = await _responses(reader, 1)
        writer.write(b"\r\n")  # arms a deadline with no message begun ...
        await asyncio.sleep(0.05)
        writer.write(GET)  # ... and on_message_begin must not arm a second one
        answers += await _responses(reader, 1)
        writer.write(GET + GET)  # pipelined: complete, begin, complete in one data_received
        answers += await _responses(reader, 2)
        writer.write(b"GET /healthz HTTP/1.1\r\n")  # and then nothing: cut at the deadline
        answers.append(await asyncio.wait_for(reader.read(), READ_TIMEOUT + 2))
        writer.close()
        return answers
    finally:
        server.should_exit = True
        await serving


def test_one_deadline_timer_at_a_time_and_none_left(settings: Settings) -> None:
    Watched.watches.clear()
    answers = asyncio.run(_exercise(settings))
    assert [a.split(b"\r\n", 1)[0] for a in answers] == [b"HTTP/1.1 200 OK"] * 4 + [
        b"HTTP/1.1 408 Request Timeout"
    ]
    [watch] = Watched.watches
    assert watch.most_alive == 1
    assert watch.alive() == 0  # every one cancelled or fired: none outlives the connection
    assert len(watch.fired) == 1  # only the last request's
    assert len(watch.handles) == 5  # connection, blank line, two pipelined, the last request
