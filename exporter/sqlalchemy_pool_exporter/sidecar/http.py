"""One HTTP/1.1 connection of the sidecar's listeners: parsing, deadlines and memory bounds.

The sidecar speaks just the HTTP its clients need — requests with a ``Content-Length``
body or none, keep-alive, pipelining, ``Expect: 100-continue`` — on an asyncio
protocol per connection (:class:`Connection`), all on one event loop
(:mod:`~sqlalchemy_pool_exporter.sidecar.listeners`). What it does with a request is the
:class:`App`'s business: it answers from the head alone (:meth:`App.head`), or after the
body (:meth:`App.handle`), either at once or by handing a :class:`Render` (work too
heavy for the loop: ``/metrics``, ``/api/pools``) to the bounded render pool.

Every connection is bounded in time and memory, whatever its client does:

* **One deadline per request**: its head and body must arrive within
  ``request_timeout`` of its first byte. Bytes trickling in do not extend it (an idle
  timer reset by every byte lets one byte per minute hold a request for ever). A new
  connection must start its first request within the same time; a keep-alive connection
  may idle between requests for ``idle_timeout``. A response must be read by the client
  within ``request_timeout`` too, or the connection is dropped.
* **Bounded buffering**: a head is at most :data:`MAX_HEAD` bytes; a body is read only
  after its ``Content-Length`` is reserved in the listeners' shared :class:`ByteBudget`
  (``max_buffered_bytes``). When the budget is short, requests that have been in progress
  for :data:`EVICTABLE_AFTER`, or whose bytes stopped coming :data:`STALLED_AFTER` ago —
  on loopback an honest push takes milliseconds — are closed, oldest first, to make
  room; if that is not enough the new request gets 503.
  Reading pauses while a response is being produced, so pipelined bytes cannot pile up.
"""

from __future__ import annotations

import asyncio
import socket
import time
from typing import Any, Protocol

from sqlalchemy_pool_exporter.sidecar.limits import ByteBudget
from sqlalchemy_pool_exporter.sidecar.messages import (
    App,
    Render,
    Request,
    Response,
    encode_head,
    json_response,
    parse_head,
)

MAX_HEAD = 16 * 1024
#: A request in progress this long (s), or a connection idle this long, may be closed
#: to make room for new ones when a limit is reached.
EVICTABLE_AFTER = 0.25
#: So may a request whose bytes stopped coming this long ago (s): on loopback an honest
#: body arrives in one go.
STALLED_AFTER = 0.05


class Context(Protocol):
    """What connections share: the loop, the limits and the render pool."""

    loop: asyncio.AbstractEventLoop
    request_timeout: float
    idle_timeout: float
    budget: ByteBudget
    handling: int  # requests being handled on the loop right now (renders yield to them)

    def hit(self, limit: str, **fields: Any) -> None: ...

    async def render(self, connection: Connection, render: Render) -> None: ...


class Host(Protocol):
    """The listener a connection belongs to."""

    @property
    def ctx(self) -> Context: ...

    @property
    def app(self) -> App: ...

    def opened(self, connection: Connection) -> None: ...

    def closed(self, connection: Connection) -> None: ...


class Connection(asyncio.Protocol):
    """One client connection."""

    def __init__(self, host: Host) -> None:
        self.host = host
        self.ctx = host.ctx
        self.buffer = bytearray()
        self.request: Request | None = None  # head parsed, body still arriving
        self.length = 0
        self.started: float | None = None  # first byte of the request in progress
        self.last_byte = 0.0
        self.idle_since = time.monotonic()
        self.served = 0
        self.busy = False  # a response is being produced or written
        self.paused = False
        self.keep_alive = True
        self.transport: asyncio.Transport | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.writable: asyncio.Future[None] | None = None

    # -- asyncio callbacks --------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.host.opened(self)
        self._arm(self.ctx.request_timeout)  # the first request must come promptly

    def connection_lost(self, exc: Exception | None) -> None:
        self.host.closed(self)
        self.ctx.budget.release(self)
        self.buffer = bytearray()
        if self.timer is not None:
            self.timer.cancel()
        self.resume_writing()

    def pause_writing(self) -> None:
        self.writable = self.ctx.loop.create_future()

    def resume_writing(self) -> None:
        if self.writable is not None and not self.writable.done():
            self.writable.set_result(None)
        self.writable = None

    def data_received(self, data: bytes) -> None:
        self.last_byte = time.monotonic()
        if self.started is None and not self.busy:
            self.started = time.monotonic()
            self._arm(self.ctx.request_timeout)
        self.buffer += data
        if not self.busy:
            self._process()
        if len(self.buffer) > self.length + MAX_HEAD and not self.paused and self.alive:
            self.paused = True  # pipelined bytes wait in the kernel, not here
            assert self.transport is not None
            self.transport.pause_reading()

    # -- state ----------------------------------------------------------------------------

    @property
    def alive(self) -> bool:
        """True until the connection is closing."""
        return self.transport is not None and not self.transport.is_closing()

    def overdue(self, now: float, after: float = EVICTABLE_AFTER) -> bool:
        """May be closed to make room: idle or in a request for ``after`` s, or stalled."""
        if self.busy:
            return False
        if self.started is not None and now - self.last_byte >= STALLED_AFTER:
            return True
        since = self.started if self.started is not None else self.idle_since
        return now - since >= after

    def drop(self, status: int, message: str, limit: str | None) -> None:
        """Answer ``status`` (unless mid-response), count ``limit``, and close now."""
        self.ctx.budget.release(self)
        self.buffer = bytearray()
        if limit is not None:
            self.ctx.hit(limit)
        if self.alive and not self.busy:
            self.respond(json_response(status, {"error": message}, close=True))
        elif self.transport is not None:
            self.transport.abort()

    def _arm(self, seconds: float) -> None:
        if self.timer is not None:
            self.timer.cancel()
        self.timer = self.ctx.loop.call_later(seconds, self._timed_out)

    def _timed_out(self) -> None:
        self.timer = None
        if self.busy:
            # the client has not read its response in time
            self.ctx.hit("request_timeout")
            if self.transport is not None:
                self.transport.abort()
        elif self.started is None and self.served:
            if self.transport is not None:
                self.transport.close()  # an idle keep-alive connection: nothing wrong
        else:
            self.drop(408, "request not complete in time", "request_timeout")

    # -- requests -------------------------------------------------------------------------

    def _process(self) -> None:
        while self.alive and not self.busy:
            if self.request is None:
                if not self.buffer:
                    return
                if self.started is None:  # a pipelined request starts now
                    self.started = time.monotonic()
                    self._arm(self.ctx.request_timeout)
                if not self._head():
                    return
                continue
            if len(self.buffer) < self.length:
                return
            request, self.request = self.request, None
            request.body = bytes(self.buffer[: self.length])
            del self.buffer[: self.length]
            self.ctx.budget.release(self)
            self.length = 0
            self.ctx.handling += 1
            try:
                answer = self.host.app.handle(request)
            finally:
                self.ctx.handling -= 1
            self._dispatch(answer)

    def _head(self) -> bool:
        """Parse and route one request head; False if more bytes are needed or it closed."""
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0:
            if len(self.buffer) > MAX_HEAD:
                self.drop(431, "request head too large", None)
            return False
        request = parse_head(bytes(self.buffer[:end]))
        del self.buffer[: end + 4]
        if request is None:
            self.drop(400, "malformed request line", None)
            return False
        self.keep_alive = request.keep_alive
        headers = request.headers
        declared = headers.get("content-length", "0")
        length = int(declared) if declared.isdigit() else 0
        answer = self.host.app.head(request, length)
        if answer is not None:
            if isinstance(answer, Response) and (length or "transfer-encoding" in headers):
                answer.close = True  # its body is not read: the connection cannot go on
            self._dispatch(answer)
            return True
        if "transfer-encoding" in headers or not declared.isdigit():
            self.drop(411, "Content-Length required", None)
            return False
        if length and not self.ctx.budget.reserve(self, length, time.monotonic()):
            self.drop(503, "sidecar busy: too many request bytes in flight", "buffered_bytes")
            return False
        self.request, self.length = request, length
        if headers.get("expect", "").lower() == "100-continue" and self.transport is not None:
            self.transport.write(f"{request.version} 100 Continue\r\n\r\n".encode())
        return True

    def _dispatch(self, answer: Response | Render) -> None:
        self.served += 1
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        self.started = None
        if isinstance(answer, Render):
            self.busy = True
            self.ctx.loop.create_task(self.ctx.render(self, answer))
        else:
            self.respond(answer)

    def respond(self, response: Response) -> None:
        """Send ``response``; close after it, or wait for the next request."""
        if self.transport is None or self.transport.is_closing():
            return
        close = response.close or not self.keep_alive
        head = encode_head(response, close=close)
        self.transport.write(head if response.omit_body else head + response.body)
        if close:
            self.transport.close()
            return
        self.idle_since = time.monotonic()
        if self.writable is not None:  # a big response: the client must read it in time
            self.busy = True
            self._arm(self.ctx.request_timeout)
            self.writable.add_done_callback(lambda _: self.ready())
        else:
            self.ready()

    async def drained(self) -> None:
        """Wait until the response written last has left (or the connection is gone)."""
        if self.writable is not None:
            await self.writable

    def ready(self) -> None:
        """The response is out: take the next request (pipelined bytes first)."""
        self.busy = False
        if not self.alive:
            return
        if self.paused and self.transport is not None:
            self.paused = False
            self.transport.resume_reading()
        if self.buffer:
            self._process()
        elif self.started is None:
            self._arm(self.ctx.idle_timeout)
