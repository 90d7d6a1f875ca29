"""``DeadlineProtocol`` inside a real in-process uvicorn server: at most one deadline timer per
connection at any time, every one of them cancelled or fired by the end, whatever order the bytes
come in (blank lines before a request, pipelined requests, a request that times out); a busy
kept-alive connection does not set a timer per request, and the timer it reuses still gives each
request its whole deadline."""

from __future__ import annotations

import asyncio
import time
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

    def call_at(self, when: float, callback: Callable[..., object], *args: Any) -> asyncio.TimerHandle:
        if getattr(callback, "__name__", "") != "_check":
            return self._loop.call_at(when, callback, *args)

        def fire() -> None:
            self.fired.append(handle)
            callback(*args)

        handle = self._loop.call_at(when, fire)
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


class Served:
    """A real uvicorn server running the app with the ``Watched`` protocol, in this event loop."""

    def __init__(self, settings: Settings, read_timeout: float) -> None:
        self.port = free_port()
        made = partial(Watched, read_timeout=read_timeout, max_connections=10)
        app = create_app(settings)
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, http=made, log_level="warning")
        self.server = uvicorn.Server(config)

    async def __aenter__(self) -> Served:
        self.serving = asyncio.create_task(self.server.serve())
        for _ in range(500):  # up to 5 s for the lifespan to start
            if self.server.started:
                break
            await asyncio.sleep(0.01)
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.server.should_exit = True
        await self.serving


async def _exercise(settings: Settings) -> list[bytes]:
    async with Served(settings, READ_TIMEOUT) as served:
        reader, writer = await asyncio.open_connection("127.0.0.1", served.port)
        writer.write(b"\r\n\r\n")  # blank lines first: the connection's own deadline covers them
        await asyncio.sleep(0.05)
        writer.write(GET)
        answers = await _responses(reader, 1)
        writer.write(b"\r\n")  # starts a request's reading with no message begun ...
        await asyncio.sleep(0.05)
        writer.write(GET)  # ... and on_message_begin must not set a second timer
        answers += await _responses(reader, 1)
        writer.write(GET + GET)  # pipelined: complete, begin, complete in one data_received
        answers += await _responses(reader, 2)
        writer.write(b"GET /healthz HTTP/1.1\r\n")  # and then nothing: cut at the deadline
        answers.append(await asyncio.wait_for(reader.read(), READ_TIMEOUT + 2))
        writer.close()
        return answers


def test_one_deadline_timer_at_a_time_and_none_left(settings: Settings) -> None:
    Watched.watches.clear()
    answers = asyncio.run(_exercise(settings))
    assert [a.split(b"\r\n", 1)[0] for a in answers] == [b"HTTP/1.1 200 OK"] * 4 + [
        b"HTTP/1.1 408 Request Timeout"
    ]
    [watch] = Watched.watches
    assert watch.most_alive == 1
    assert watch.alive() == 0  # every one cancelled or fired: none outlives the connection
    assert 1 <= len(watch.handles) <= 3  # the connection's, set again for the last request's deadline
    assert watch.fired[-1] is watch.handles[-1]  # the last one cut the request


async def _keep_alive(settings: Settings, requests: int) -> list[bytes]:
    async with Served(settings, 30.0) as served:
        reader, writer = await asyncio.open_connection("127.0.0.1", served.port)
        answers = []
        for _ in range(requests):
            writer.write(GET)
            answers += await _responses(reader, 1)
        writer.close()
        return answers


def test_a_busy_connection_reuses_one_timer(settings: Settings) -> None:
    Watched.watches.clear()
    answers = asyncio.run(_keep_alive(settings, 200))
    assert [a.split(b"\r\n", 1)[0] for a in answers] == [b"HTTP/1.1 200 OK"] * 200
    [watch] = Watched.watches
    assert len(watch.handles) == 1  # 200 requests in well under 30 s: the connection's one timer
    assert watch.alive() == 0  # cancelled when the connection closed


async def _late_request(settings: Settings) -> float:
    async with Served(settings, READ_TIMEOUT) as served:
        reader, writer = await asyncio.open_connection("127.0.0.1", served.port)
        await asyncio.sleep(READ_TIMEOUT * 0.6)
        writer.write(GET)
        await _responses(reader, 1)
        await asyncio.sleep(READ_TIMEOUT * 0.2)  # the connection's timer fires during the next one
        started = time.monotonic()
        writer.write(b"GET /healthz HTTP/1.1\r\n")
        cut = await asyncio.wait_for(reader.read(), READ_TIMEOUT + 2)
        waited = time.monotonic() - started
        writer.close()
        assert cut.startswith(b"HTTP/1.1 408 ")
        return waited


def test_a_reused_timer_gives_each_request_its_whole_deadline(settings: Settings) -> None:
    """The timer set when the connection opened fires while a later request is being read: that
    request is not cut then, but at its own deadline."""
    Watched.watches.clear()
    waited = asyncio.run(_late_request(settings))
    assert waited >= READ_TIMEOUT - 0.02  # the loop's clock may round a little
    [watch] = Watched.watches
    assert len(watch.handles) == 2 and watch.fired == watch.handles
