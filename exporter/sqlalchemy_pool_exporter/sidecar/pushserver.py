"""The push listener: a small HTTP/1.1 server on one asyncio event loop, in one thread.

Pushes are tiny, frequent and CPU-bound to apply, so one event loop does them all in
turn: no thread per connection, no lock convoy, keep-alive for free. It speaks just the
HTTP a pusher needs — ``POST /v1/push`` with ``Content-Length`` (``Expect:
100-continue`` honoured; chunked bodies refused with 411) and ``GET /healthz`` — and
answers everything else with a one-line JSON error. Headers are checked before the body
is read, so a wrong token or an oversized body costs nothing and the connection is
closed. Idle connections are dropped after :data:`IDLE_TIMEOUT` seconds.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
from collections.abc import Callable
from typing import Any

from sqlalchemy_pool_exporter.protocol.records import PushRejected
from sqlalchemy_pool_exporter.protocol.wire import PUSH_PATH

MAX_HEAD = 16 * 1024
IDLE_TIMEOUT = 60.0
REASONS = {
    200: "OK",
    100: "Continue",
    400: "Bad Request",
    401: "Unauthorized",
    404: "Not Found",
    405: "Method Not Allowed",
    409: "Conflict",
    411: "Length Required",
    413: "Content Too Large",
    429: "Too Many Requests",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
}

Handler = Callable[[bytes], tuple[int, dict[str, Any]]]


class _PushProtocol(asyncio.Protocol):
    def __init__(self, server: PushServer) -> None:
        self.server = server
        self.buffer = bytearray()
        self.length: int | None = None  # body length of the request being read
        self.keep_alive = True
        self.transport: asyncio.Transport | None = None
        self.idle: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.server.connections.add(self)
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._touch()

    def connection_lost(self, exc: Exception | None) -> None:
        self.server.connections.discard(self)
        if self.idle is not None:
            self.idle.cancel()

    def _touch(self) -> None:
        if self.idle is not None:
            self.idle.cancel()
        loop = asyncio.get_running_loop()
        self.idle = loop.call_later(IDLE_TIMEOUT, self._close)

    def _close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def data_received(self, data: bytes) -> None:
        self._touch()
        self.buffer += data
        while self.transport is not None and not self.transport.is_closing():
            if self.length is None:
                if not self._head():
                    return
                if self.length is None:
                    continue  # answered without a body (GET /healthz)
            if len(self.buffer) < self.length:
                return
            body = bytes(self.buffer[: self.length])
            del self.buffer[: self.length]
            self.length = None
            self._respond(*self.server.handle(body))

    def _head(self) -> bool:
        """Parse one request head; False if more bytes are needed or it was answered."""
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0:
            if len(self.buffer) > MAX_HEAD:
                self._fail(431, None, "request head too large")
            return False
        head = bytes(self.buffer[:end]).decode("latin-1")
        del self.buffer[: end + 4]
        line, *header_lines = head.split("\r\n")
        parts = line.split()
        if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
            self._fail(400, None, "malformed request line")
            return False
        method, target, version = parts
        headers = {}
        for header in header_lines:
            name, _, value = header.partition(":")
            headers[name.strip().lower()] = value.strip()
        connection = headers.get("connection", "").lower()
        self.keep_alive = (version == "HTTP/1.1" and connection != "close") or (
            connection == "keep-alive"
        )
        path = target.split("?", 1)[0]
        if method == "GET" and path == "/healthz":
            self._respond(200, {"status": "ok", "processes": self.server.live()})
            return True
        if path != PUSH_PATH:
            self._fail(404, None, f"POST pushes to {PUSH_PATH}")
            return False
        if method != "POST":
            self._fail(405, None, f"POST pushes to {PUSH_PATH}")
            return False
        status = self.server.check_head(
            headers.get("authorization"),
            headers.get("content-length"),
            headers.get("transfer-encoding"),
        )
        if status is not None:
            self._fail(*status)
            return False
        self.length = int(headers["content-length"])
        if headers.get("expect", "").lower() == "100-continue" and self.transport is not None:
            self.transport.write(f"{version} 100 Continue\r\n\r\n".encode())
        return True

    def _fail(self, status: int, reason: str | None, message: str) -> None:
        """Answer without reading the body, count it if it is a rejection, and close."""
        self.keep_alive = False
        if reason is not None:
            status, doc = self.server.reject(PushRejected(status, reason, message))
        else:
            doc = {"error": message}
        self._respond(status, doc)

    def _respond(self, status: int, doc: dict[str, Any]) -> None:
        if self.transport is None:
            return
        body = json.dumps(doc, separators=(",", ":")).encode()
        head = (
            f"HTTP/1.1 {status} {REASONS.get(status, 'Error')}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
            + ("" if self.keep_alive else "Connection: close\r\n")
            + "\r\n"
        )
        self.transport.write(head.encode() + body)
        if not self.keep_alive:
            self.transport.close()


class PushServer:
    """The push listener's event loop, socket and thread."""

    def __init__(
        self,
        sock: socket.socket,
        handle: Handler,
        check_head: Callable[[str | None, str | None, str | None], tuple[int, str, str] | None],
        reject: Callable[[PushRejected], tuple[int, dict[str, Any]]],
        live: Callable[[], int],
    ) -> None:
        self.sock = sock
        self.handle = handle
        self.check_head = check_head
        self.reject = reject
        self.live = live
        self.connections: set[_PushProtocol] = set()
        self.loop = asyncio.new_event_loop()
        self._server: asyncio.AbstractServer | None = None
        self._thread = threading.Thread(target=self._run, name="pool-exporter-push", daemon=True)
        self._ready = threading.Event()

    def start(self) -> None:
        """Serve in a daemon thread; returns once the loop accepts connections."""
        self._thread.start()
        self._ready.wait(10)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self._server = self.loop.run_until_complete(
            self.loop.create_server(lambda: _PushProtocol(self), sock=self.sock, backlog=256)
        )
        self._ready.set()
        self.loop.run_forever()
        for connection in list(self.connections):
            connection._close()
        self._server.close()
        self.loop.run_until_complete(self._server.wait_closed())
        self.loop.close()

    def stop(self) -> None:
        """Stop the loop and close the listening socket."""
        if self._thread.is_alive():
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(5)
        self.sock.close()
