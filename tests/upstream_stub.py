"""A real HTTP/1.1 profile API on 127.0.0.1 for upstream tests, with behaviour switchable at run time.

It runs its own event loop in a thread, so a test's loop and the server never block each other.
``GET /profiles/{id}`` serves ``profiles``; ``POST /token`` is an OAuth2 client-credentials endpoint.
Tests set ``mode`` (and ``delay_s``, ``retry_after`` …) between or during requests and read the counters.
"""

from __future__ import annotations

import asyncio
import base64
import socket
import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import parse_qs, unquote

import orjson

CLIENT_ID, CLIENT_SECRET = "opentime", "s3cret"

# mode → what a profile request gets
MODES = (
    "normal",  # 200 with the profile, 404 for unknown ids
    "slow",  # like normal after ``delay_s``
    "flaky",  # every other request (1st, 3rd, …) answers 503
    "unavailable",  # 503 (with ``retry_after`` if set)
    "error",  # 500
    "forbidden",  # 403
    "not-found",  # 404
    "bad-json",  # 200 with a body that is not JSON
    "not-object",  # 200 with a JSON array
    "big",  # 200 with a JSON object of ``big_bytes``
    "hang",  # never answers
    "drop",  # closes the connection without answering
)


class UpstreamStub:
    def __init__(self) -> None:
        self.profiles: dict[str, dict[str, object]] = {}
        self.mode = "normal"
        self.delay_s = 0.0
        self.retry_after: str | None = None
        self.big_bytes = 1 << 20
        self.requests: Counter[str] = Counter()  # recipient id (decoded) → profile requests
        self.paths: list[str] = []  # raw request targets, to check URL encoding
        self.headers: list[dict[str, str]] = []  # headers of each profile request
        self.oauth = False  # profile requests need a bearer token issued by /token
        self.token_ttl_s = 3600
        self.tokens_issued = 0
        self.valid_tokens: set[str] = set()
        self.port = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def total_requests(self) -> int:
        return sum(self.requests.values())

    def start(self) -> None:
        ready = threading.Event()
        self._thread = threading.Thread(target=asyncio.run, args=(self._main(ready),), daemon=True)
        self._thread.start()
        if not ready.wait(5):
            raise RuntimeError("upstream stub did not start")

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        if self._thread is not None:
            self._thread.join(5)

    async def _main(self, ready: threading.Event) -> None:
        self._loop, self._stop = asyncio.get_running_loop(), asyncio.Event()
        handlers: set[asyncio.Task[None]] = set()

        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            task = asyncio.current_task()
            assert task is not None
            handlers.add(task)
            try:
                await self._connection(reader, writer)
            finally:
                handlers.discard(task)

        server = await asyncio.start_server(serve, "127.0.0.1", 0)
        self.port = server.sockets[0].getsockname()[1]
        ready.set()
        await self._stop.wait()
        server.close()
        for task in list(handlers):
            task.cancel()
        await asyncio.gather(*handlers, return_exceptions=True)

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
                request_line, *lines = head.rstrip("\r\n").split("\r\n")
                method, target, _ = request_line.split(" ", 2)
                headers = {k.strip().lower(): v.strip() for k, v in (line.split(":", 1) for line in lines)}
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                reply = await self._respond(method, target, headers, body)
                if reply is None:
                    return
                writer.write(reply)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def _respond(self, method: str, target: str, headers: dict[str, str], body: bytes) -> bytes | None:
        if method == "POST" and target == "/token":
            return self._token(headers, body)
        if method != "GET" or not target.startswith("/profiles/"):
            return _response(405, b"{}")
        recipient = unquote(target.removeprefix("/profiles/"))
        self.requests[recipient] += 1
        self.paths.append(target)
        self.headers.append(headers)
        if self.oauth and headers.get("authorization", "").removeprefix("Bearer ") not in self.valid_tokens:
            return _response(401, b'{"error":"invalid_token"}')
        return await self._profile(recipient)

    async def _profile(self, recipient: str) -> bytes | None:
        mode = self.mode
        if mode == "slow":
            await asyncio.sleep(self.delay_s)
        if mode == "hang":
            await asyncio.Event().wait()
        if mode == "drop":
            return None
        if mode == "unavailable" or (mode == "flaky" and self.total_requests % 2 == 1):
            extra = {"Retry-After": self.retry_after} if self.retry_after else {}
            return _response(503, b"{}", extra)
        simple = {"error": (500, b"{}"), "forbidden": (403, b"{}"), "not-found": (404, b"{}")}
        simple |= {"bad-json": (200, b"<html>oops"), "not-object": (200, b"[1, 2]")}
        if mode in simple:
            return _response(*simple[mode])
        if mode == "big":
            return _response(200, orjson.dumps({"pad": "x" * self.big_bytes}))
        profile = self.profiles.get(recipient)
        return _response(404, b"{}") if profile is None else _response(200, orjson.dumps(profile))

    def _token(self, headers: dict[str, str], body: bytes) -> bytes:
        expected = base64.b64encode(f"{CLIENT_ID}:{CLIENT_SECRET}".encode()).decode()
        grant = parse_qs(body.decode()).get("grant_type")
        if headers.get("authorization") != f"Basic {expected}" or grant != ["client_credentials"]:
            return _response(401, b'{"error":"invalid_client"}')
        self.tokens_issued += 1
        token = f"token-{self.tokens_issued}"
        self.valid_tokens.add(token)
        payload = {"access_token": token, "token_type": "Bearer", "expires_in": self.token_ttl_s}
        return _response(200, orjson.dumps(payload))


def _response(status: int, body: bytes, extra: dict[str, str] | None = None) -> bytes:
    headers = {"Content-Type": "application/json", "Content-Length": str(len(body)), **(extra or {})}
    head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    return f"HTTP/1.1 {status} X\r\n{head}\r\n".encode() + body


@contextmanager
def running_stub() -> Iterator[UpstreamStub]:
    stub = UpstreamStub()
    stub.start()
    try:
        yield stub
    finally:
        stub.stop()


@contextmanager
def blackhole() -> Iterator[str]:
    """A 127.0.0.1 port whose accept queue is full: new connections hang in SYN (a connect timeout)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    held: list[socket.socket] = []
    try:
        for _ in range(16):
            held.append(socket.create_connection(("127.0.0.1", port), timeout=0.05))
    except TimeoutError:  # the queue is full
        pass
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        for sock in held:
            sock.close()
        listener.close()
