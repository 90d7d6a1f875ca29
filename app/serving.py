"""How uvicorn runs the app: its options, and the HTTP protocol with read deadlines and a connection cap.

uvicorn (httptools) gives a connection no deadline until its first response: a client that connects
and sends nothing, or sends its headers or body a byte at a time (slowloris), holds the connection and
its buffers for as long as it likes, and ``limit_concurrency`` only answers 503 once a request's
headers are complete, which a slow client never reaches. ``DeadlineProtocol`` adds what is missing:

- one deadline per request, ``request_read_timeout_seconds`` from its first byte (from the opening of
  the connection for the first request; blank lines between requests count as a request's bytes) to
  its last, headers and body, on every request of a kept-alive connection: past it the client gets a
  408 with ``Connection: close`` if no response is under way, and the connection is closed either way;
- a cap: a connection opened while ``max_connections`` are open gets a 503 and is closed at once,
  before anything is read. Idle keep-alive connections are closed by uvicorn's ``timeout_keep_alive``.
"""

from __future__ import annotations

import asyncio
from functools import partial
from typing import Any, cast

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle

from app.config import Settings
from app.logs import log_config


def _raw_response(status: bytes, message: str, *headers: bytes) -> bytes:
    """A whole HTTP/1.1 response that closes the connection, written before or instead of the app."""
    body = b'{"error": "' + message.encode() + b'"}'
    head = [b"HTTP/1.1 " + status, b"content-type: application/json", b"content-length: %d" % len(body)]
    return b"\r\n".join([*head, *headers, b"connection: close", b"", body])


_TIMED_OUT = _raw_response(b"408 Request Timeout", "the request was not sent in time")
_BUSY = _raw_response(b"503 Service Unavailable", "too many connections, try again", b"retry-after: 1")


class DeadlineProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a deadline on reading each request and a connection cap.

    A request's reading starts with the first byte received while none is being read (any byte: the
    parser skips blank lines before a request line without starting a message, yet they cancel
    uvicorn's keep-alive timer, so they must start a deadline), with ``on_message_begin`` (pipelined
    after a request read whole in the same data), or with the opening of the connection; it ends when
    a request has been read whole. Starting and ending only note the time: a timer per request (a
    ``call_later`` and a ``cancel``) cost about 3 µs, a tenth of a warm open. At most one timer is
    alive per connection; when it fires it checks the request being read then, if any: past its
    deadline it is cut, else the timer is set again for that request's deadline. So the deadline is
    exact and a busy kept-alive connection sets a timer about once per ``read_timeout``."""

    def __init__(self, *args: Any, read_timeout: float, max_connections: int, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._read_timeout = read_timeout
        self._max_connections = max_connections
        self._reading_since: float | None = None  # loop time the request being read started
        self._timer: asyncio.TimerHandle | None = None
        # The cycle of the last request read whole (None before the first): a timed-out request
        # whose headers are not complete has no cycle of its own yet, and this tells which is whose.
        self._last_read: RequestResponseCycle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > self._max_connections:
            self.logger.warning("connection refused: %d connections are open", len(self.connections))
            transport.write(_BUSY)
            transport.close()
            return
        self._start_reading()  # the first request's deadline runs from the opening of the connection

    def connection_lost(self, exc: Exception | None) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._reading_since is None and not self.transport.is_closing():
            self._start_reading()
        super().data_received(data)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self._reading_since is None:  # pipelined after a request read whole in the same data
            self._start_reading()

    def on_message_complete(self) -> None:
        self._reading_since = None
        self._last_read = self.cycle
        super().on_message_complete()

    def _start_reading(self) -> None:
        self._reading_since = since = self.loop.time()
        if self._timer is None:
            self._timer = self.loop.call_at(since + self._read_timeout, self._check)

    def _check(self) -> None:
        """The timer: cut the request being read if it is past its deadline, else wait for that."""
        self._timer = None
        since = self._reading_since
        if since is None or self.transport.is_closing():
            return  # nothing is being read: the next byte sets a timer again
        deadline = since + self._read_timeout
        if self.loop.time() < deadline:
            self._timer = self.loop.call_at(deadline, self._check)
            return
        self._timed_out()

    def _may_answer(self) -> bool:
        """Whether a 408 can be written now: no earlier response is unfinished (writing into one
        would corrupt it) and the request being read has not started its own."""
        if self._last_read is not None and not self._last_read.response_complete:
            return False
        reading = None if self.cycle is self._last_read else self.cycle
        return reading is None or not reading.response_started

    def _timed_out(self) -> None:
        self._reading_since = None
        if self._may_answer():
            self.transport.write(_TIMED_OUT)
        if self.cycle is not None and not self.cycle.response_complete:
            self.cycle.disconnected = True  # the app's receive() says so; its sends are dropped
            self.cycle.message_event.set()
        self.transport.close()


def protocol(settings: Settings) -> type[asyncio.Protocol]:
    """The protocol class for ``settings``; a partial of a module-level class, so worker processes
    (uvicorn pickles its config for them) rebuild it by reference."""
    made = partial(
        DeadlineProtocol,
        read_timeout=settings.request_read_timeout_seconds,
        max_connections=settings.max_connections,
    )
    return cast("type[asyncio.Protocol]", made)  # uvicorn only calls it, as it would a class


def uvicorn_options(settings: Settings) -> dict[str, Any]:
    """How ``opentime serve`` runs uvicorn (also the benchmarks' servers, so they measure the same)."""
    return {
        "host": settings.host,
        "port": settings.port,
        "loop": "uvloop",
        "http": protocol(settings),
        "proxy_headers": True,
        "forwarded_allow_ips": settings.forwarded_allow_ips,
        "access_log": settings.access_log,
        "log_config": log_config(settings.log_level, settings.log_format),  # applied in every worker
        "log_level": settings.log_level,
        "server_header": False,
    }


def run_uvicorn(settings: Settings) -> None:
    uvicorn.run("app.app:serve_app", factory=True, workers=settings.workers, **uvicorn_options(settings))
