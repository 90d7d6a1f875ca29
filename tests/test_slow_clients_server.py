"""Abuse of the HTTP layer against a real ``opentime serve`` on 127.0.0.1, with raw sockets.

Attack (issue 13, finding 1): ``POST /webhooks/events`` read up to 1 MiB before it looked at the
signature, and nothing timed out a slow header or body: 100 connections that sent 1 MiB - 1 byte
without a valid signature and stopped raised the server's RSS from 88 to 197 MB and stayed open.
"""

from __future__ import annotations

import select
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import pytest

from app.config import Settings
from app.security.webhook_auth import sign_header
from tests.servers import free_port, running, server_config

pytestmark = pytest.mark.server
SECRET = "whsec-slow-test-0123456789"
READ_TIMEOUT = 2.0
MAX_CONNECTIONS = 150
CONCURRENT_BODIES = 4
BODY = 1024 * 1024 - 1  # just under webhook_max_body_bytes


@dataclass(frozen=True, slots=True)
class Server:
    port: int
    process: subprocess.Popen[str]

    def connect(self) -> socket.socket:
        return socket.create_connection(("127.0.0.1", self.port), timeout=10)

    def rss_kib(self) -> int:
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise AssertionError("no VmRSS line")


@pytest.fixture
def server(settings: Settings, tmp_path: Path) -> Iterator[Server]:
    port = free_port()
    config = server_config(
        settings,
        port,
        tmp_path / "opentime.toml",
        webhook_secrets=(SECRET,),
        request_read_timeout_seconds=READ_TIMEOUT,
        max_connections=MAX_CONNECTIONS,
        webhook_concurrent_bodies=CONCURRENT_BODIES,
    )
    with running(["serve", "--config", str(config)], port, tmp_path / "server.log") as process:
        yield Server(port, process)


def webhook_head(length: int, signature: str | None) -> bytes:
    lines = [
        "POST /webhooks/events HTTP/1.1",
        "Host: 127.0.0.1",
        "Content-Type: application/json",
        f"Content-Length: {length}",
    ]
    if signature is not None:
        lines.append(f"Opentime-Signature: {signature}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def send_what_fits(sock: socket.socket, data: bytes) -> int:
    """Send as much of ``data`` as the socket takes without blocking; the bytes sent."""
    sock.setblocking(False)
    sent = 0
    try:
        while sent < len(data):
            sent += sock.send(data[sent : sent + 65536])
    except (BlockingIOError, ConnectionError):
        pass
    sock.settimeout(10)
    return sent


def read_until_closed(sock: socket.socket, limit: float) -> tuple[bytes, float]:
    """Everything the server sends until it closes the connection, and when that happened."""
    start, reply = time.monotonic(), b""
    sock.settimeout(limit)
    try:
        while chunk := sock.recv(65536):
            reply += chunk
    except ConnectionResetError:
        pass
    except TimeoutError:
        raise AssertionError(f"still open after {limit} s; got {reply[:80]!r}") from None
    return reply, time.monotonic() - start


def test_unsigned_big_bodies_are_refused_before_they_are_read(server: Server) -> None:
    stale = sign_header([SECRET], int(time.time()) - 3600, b"")  # well-formed, an hour old
    signatures = [None, "t=1,v1=zz", stale, "nonsense"]
    body = b"[" + b" " * (BODY - 2) + b"]"
    before = server.rss_kib()
    with ExitStack() as stack:
        sockets = [stack.enter_context(server.connect()) for _ in range(100)]
        for index, sock in enumerate(sockets):
            sock.sendall(webhook_head(BODY, signatures[index % len(signatures)]))
            send_what_fits(sock, body)
        time.sleep(1.0)  # the server has had every head and whatever body it wanted to read
        during = server.rss_kib()
        replies = [_reply(sock) for sock in sockets]
    # Before: +109 MB (every body held). A margin for allocator noise, far below one MiB each.
    assert during - before < 16 * 1024, (before, during)
    assert all(reply.startswith(b"HTTP/1.1 401 ") for reply in replies), {r[:40] for r in replies}
    assert all(b"connection: close" in reply.lower() for reply in replies)


def _reply(sock: socket.socket) -> bytes:
    try:
        return read_until_closed(sock, READ_TIMEOUT + 3)[0]
    except AssertionError:
        return b"(still open)"


def test_a_client_that_sends_nothing_is_closed_at_the_deadline(server: Server) -> None:
    with server.connect() as sock:
        reply, took = read_until_closed(sock, READ_TIMEOUT + 3)
    assert reply.startswith(b"HTTP/1.1 408 ") and took < READ_TIMEOUT + 1.5


def test_slow_headers_are_cut_at_the_deadline(server: Server) -> None:
    with server.connect() as sock:
        sock.sendall(b"POST /webhooks/events HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        start = time.monotonic()
        answered = b""
        while time.monotonic() - start < READ_TIMEOUT + 3:  # slowloris: a header byte every 0.25 s
            try:
                sock.sendall(b"X")
            except (BrokenPipeError, ConnectionResetError):
                break
            if select.select([sock], [], [], 0.25)[0]:
                answered = read_until_closed(sock, 1)[0]
                break
        took = time.monotonic() - start
    assert took < READ_TIMEOUT + 1.5
    assert answered.startswith(b"HTTP/1.1 408 ") or answered == b""


def test_a_slow_signed_body_gets_408_at_the_deadline(server: Server) -> None:
    body = b'[{"id": "slow", "type": "profile.updated", "recipient": "r", "payload": {}}]'
    with server.connect() as sock:
        sock.sendall(webhook_head(len(body), sign_header([SECRET], int(time.time()), body)))
        start = time.monotonic()
        for byte in body[:8]:  # a well-formed, fresh header: the body is read, one byte at a time
            sock.sendall(bytes([byte]))
            time.sleep(0.2)
        reply, _ = read_until_closed(sock, READ_TIMEOUT + 3)
        took = time.monotonic() - start
    assert reply.startswith(b"HTTP/1.1 408 "), reply[:80]
    assert took < READ_TIMEOUT + 1.5


def test_connections_past_the_cap_get_503_at_once(server: Server) -> None:
    with ExitStack() as stack:
        held = [stack.enter_context(server.connect()) for _ in range(MAX_CONNECTIONS)]
        time.sleep(0.3)  # every one accepted
        with server.connect() as extra:
            reply, took = read_until_closed(extra, 1.0)
        assert reply.startswith(b"HTTP/1.1 503 ") and b"retry-after: 1" in reply and took < 0.5
        assert len(held) == MAX_CONNECTIONS
    # The held ones time out and go: the server answers again.
    time.sleep(READ_TIMEOUT + 0.5)
    with server.connect() as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        reply, _ = read_until_closed(sock, 5)
    assert reply.startswith(b"HTTP/1.1 200 ")


def test_bodies_behind_plausible_headers_are_read_a_few_at_a_time(server: Server) -> None:
    # A well-formed, fresh header with a made-up HMAC: its body must be read before the signature can
    # be checked. Without a bound, max_connections such requests would hold a MiB each.
    fake = sign_header([SECRET], int(time.time()), b"another body")
    with ExitStack() as stack:
        readers = [stack.enter_context(server.connect()) for _ in range(CONCURRENT_BODIES)]
        for sock in readers:
            sock.sendall(webhook_head(BODY, fake) + b"[")  # and then nothing: the read is held open
        time.sleep(0.5)
        with server.connect() as extra:
            extra.sendall(webhook_head(BODY, fake))
            reply, _ = read_until_closed(extra, 2.0)
        assert reply.startswith(b"HTTP/1.1 503 ") and b"too many webhook bodies" in reply, reply[:120]
        answers = [read_until_closed(sock, READ_TIMEOUT + 3)[0] for sock in readers]
    assert all(answer.startswith(b"HTTP/1.1 408 ") for answer in answers)


def read_response(sock: socket.socket) -> bytes:
    """One whole response (head and ``content-length`` body) from a kept-alive connection."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"closed before a whole head: {data[:80]!r}"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(
        int(line.split(b":")[1])
        for line in head.lower().split(b"\r\n")
        if line.startswith(b"content-length:")
    )
    while len(body) < length:
        body += sock.recv(65536)
    return head + b"\r\n\r\n" + body


def answered_once(server: Server) -> socket.socket:
    """A connection whose first request was answered and which is kept alive for the next."""
    sock = server.connect()
    sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    first = read_response(sock)
    assert first.startswith(b"HTTP/1.1 200 ") and b"connection: close" not in first.lower()
    return sock


def dribble(sock: socket.socket, data: bytes, every: float, limit: float) -> tuple[bytes, float]:
    """Send ``data`` a byte every ``every`` seconds until the server answers or closes (or ``limit``
    passes): what it answered and how long after the first byte."""
    start = time.monotonic()
    for byte in data:
        if time.monotonic() - start > limit:
            break
        try:
            sock.sendall(bytes([byte]))
        except (BrokenPipeError, ConnectionResetError):
            return b"", time.monotonic() - start
        if select.select([sock], [], [], every)[0]:
            try:
                return read_until_closed(sock, 2)[0], time.monotonic() - start
            except ConnectionResetError:
                return b"", time.monotonic() - start
    raise AssertionError(f"still open {time.monotonic() - start:.1f} s after the first byte")


SLOW_HEAD = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: " + b"x" * 200 + b"\r\n\r\n"


def test_a_slow_second_request_on_a_kept_alive_connection_gets_408(server: Server) -> None:
    # Before: the deadline saw the first request's cycle (its response started) and closed the
    # connection without a 408, so the client could not tell a deadline from a crash.
    with answered_once(server) as sock:
        time.sleep(0.5)  # idle between requests is the keep-alive timeout's business, not the deadline's
        reply, took = dribble(sock, SLOW_HEAD, 0.25, READ_TIMEOUT + 3)
    assert reply.startswith(b"HTTP/1.1 408 ") and b"connection: close" in reply, reply[:80]
    assert READ_TIMEOUT - 0.3 < took < READ_TIMEOUT + 1.5, took


def test_a_slow_second_body_after_quick_headers_gets_408(server: Server) -> None:
    body = b'[{"id": "slow2", "type": "profile.updated", "recipient": "r", "payload": {}}]'
    with answered_once(server) as sock:
        head = webhook_head(len(body), sign_header([SECRET], int(time.time()), body))
        sock.sendall(head)  # the headers at once, then the body a byte at a time
        reply, took = dribble(sock, body, 0.2, READ_TIMEOUT + 3)
    assert reply.startswith(b"HTTP/1.1 408 "), reply[:80]
    assert took < READ_TIMEOUT + 1.5, took


def test_blank_lines_between_requests_do_not_hold_a_connection(server: Server) -> None:
    # The parser skips CR/LF before a request line without starting a message, and every byte
    # received cancelled uvicorn's keep-alive timer: before, a client sending "\r\n" every 0.25 s
    # held its connection (and its slot under max_connections) for ever.
    with answered_once(server) as sock:
        _, took = dribble(sock, b"\r\n" * 200, 0.25, READ_TIMEOUT + 8)
    assert took < READ_TIMEOUT + 1.5, took
