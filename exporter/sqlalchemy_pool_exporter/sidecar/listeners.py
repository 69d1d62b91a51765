"""The sidecar's HTTP server: both listeners on one asyncio event loop, in one thread.

Why this shape, and not a thread per connection or an ASGI server:

* The standard library's ``ThreadingHTTPServer`` starts a thread per connection (2,000
  idle connections were 2,000 threads) and, out of file descriptors, spins on
  ``accept()``. One event loop holds thousands of idle connections for a few KiB each.
* uvicorn or hypercorn would add a dependency to the sidecar and still not give what
  it needs: neither bounds a whole request (head and body) by one deadline, nor the
  bytes buffered across all connections, nor lets ``/metrics`` wait in a bounded queue
  apart from pushes. The HTTP the sidecar speaks is small (:mod:`.http`); owning it
  keeps every bound in one place, tested against real sockets.

Pushes are small and are applied on the loop itself, one after another: no locks
contended, no thread hand-off. ``/metrics`` and ``/api/pools`` are rendered by a worker
thread (``render_workers``, one by default: under the GIL a second one would only take
CPU from pushes), with at most ``render_queue`` more waiting their turn, each for at
most ``request_timeout``; any beyond get 503 at once. At most :data:`MAX_UNREAD`
rendered responses wait for their clients to read them (the oldest is dropped to make
room, and each gets ``request_timeout``), so slow readers can neither pile responses up
in memory nor hold the renderer. However many scrapes arrive, pushes keep the loop and
at least half the CPU.

Each :class:`Listener` accepts by itself rather than through ``loop.create_server``, to
hold its bounds: at ``max_connections`` a new connection takes the place of the
longest-idle or slowest one (see :data:`.http.EVICTABLE_AFTER`), or is closed if every
connection is busy; when ``accept()`` fails for lack of file descriptors the listener
stops accepting for a moment (50 ms, doubling to 1 s while it lasts), closes one
overdue connection to free a descriptor, and logs once a minute — instead of a loop
spinning on a listening socket that stays readable.
"""

from __future__ import annotations

import asyncio
import errno
import socket
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from sqlalchemy_pool_exporter.logs import RateLimitedReporter, get_logger
from sqlalchemy_pool_exporter.sidecar.http import Connection
from sqlalchemy_pool_exporter.sidecar.limits import ByteBudget, LimitHits
from sqlalchemy_pool_exporter.sidecar.messages import App, Render, json_response

log = get_logger(__name__)
_OUT_OF_RESOURCES = {errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM}
ACCEPT_BATCH = 64
#: Rendered responses waiting for their client to read them, at most.
MAX_UNREAD = 4
MIN_BACKOFF, MAX_BACKOFF = 0.05, 1.0


class Busy(Exception):
    """No render slot within the wait allowed."""


class Listener:
    """One listening socket: its accept loop and its connections."""

    def __init__(
        self, server: HttpServer, name: str, sock: socket.socket, app: App, max_connections: int
    ) -> None:
        self.ctx = server
        self.name = name
        self.sock = sock
        self.app = app
        self.max_connections = max_connections
        self.connections: dict[Connection, None] = {}  # oldest first
        self.pending = 0
        self.backoff = MIN_BACKOFF
        self.running = False

    def start(self) -> None:
        """Start accepting (on the loop)."""
        self.sock.setblocking(False)
        self.running = True
        self.ctx.loop.add_reader(self.sock, self._accept)

    def stop(self) -> None:
        """Stop accepting and close every connection (on the loop)."""
        self.running = False
        self.ctx.loop.remove_reader(self.sock)
        for connection in list(self.connections):
            if connection.transport is not None:
                connection.transport.abort()

    def opened(self, connection: Connection) -> None:
        self.connections[connection] = None

    def closed(self, connection: Connection) -> None:
        self.connections.pop(connection, None)

    def _accept(self) -> None:
        for _ in range(ACCEPT_BATCH):
            try:
                conn, _address = self.sock.accept()
            except (BlockingIOError, InterruptedError):
                self.backoff = MIN_BACKOFF
                return
            except OSError as exc:
                if exc.errno in _OUT_OF_RESOURCES:
                    self._out_of_descriptors(exc)
                    return
                continue  # the client gave up before we accepted (ECONNABORTED, …)
            if len(self.connections) + self.pending >= self.max_connections:
                self.ctx.hit("connections", listener=self.name)
                if not self._evict():
                    conn.close()
                    continue
            conn.setblocking(False)
            self.pending += 1
            self.ctx.loop.create_task(self._connect(conn))

    async def _connect(self, conn: socket.socket) -> None:
        try:
            await self.ctx.loop.connect_accepted_socket(lambda: Connection(self), conn)
        except OSError:
            conn.close()
        finally:
            self.pending -= 1

    def _evict(self) -> bool:
        """Close the oldest overdue connection; False if every one is busy or fresh."""
        now = time.monotonic()
        for connection in self.connections:
            if connection.overdue(now):
                connection.drop(503, "too many connections; closed to make room", None)
                self.connections.pop(connection, None)
                return True
        return False

    def _out_of_descriptors(self, exc: OSError) -> None:
        loop = self.ctx.loop
        loop.remove_reader(self.sock)
        self._evict()
        self.ctx.hit("file_descriptors", listener=self.name, error=exc.strerror or str(exc))
        loop.call_later(self.backoff, self._resume)
        self.backoff = min(self.backoff * 2, MAX_BACKOFF)

    def _resume(self) -> None:
        if self.running:
            self.ctx.loop.add_reader(self.sock, self._accept)


class HttpServer:
    """The event loop, its thread, the listeners, the byte budget and the render pool."""

    def __init__(
        self,
        *,
        hits: LimitHits,
        request_timeout: float = 10.0,
        idle_timeout: float = 60.0,
        max_buffered_bytes: int = 32 * 1024 * 1024,
        render_workers: int = 1,
        render_queue: int = 4,
    ) -> None:
        self.loop = asyncio.new_event_loop()
        self.hits = hits
        self.request_timeout = request_timeout
        self.idle_timeout = idle_timeout
        self.budget = ByteBudget(max_buffered_bytes)
        self.listeners: list[Listener] = []
        self._executor = ThreadPoolExecutor(render_workers, "pool-exporter-render")
        self._free = render_workers
        self._waiting: deque[asyncio.Future[None]] = deque()
        self._max_waiting = render_queue
        self._unread: dict[Connection, None] = {}  # rendered responses still being sent
        self._reporter = RateLimitedReporter(log)
        self._thread = threading.Thread(target=self._run, name="pool-exporter-http", daemon=True)
        self._ready = threading.Event()

    def listen(self, name: str, sock: socket.socket, app: App, max_connections: int) -> None:
        """Serve ``app`` on the bound socket ``sock`` (before :meth:`start`)."""
        self.listeners.append(Listener(self, name, sock, app, max_connections))

    def hit(self, limit: str, **fields: Any) -> None:
        """Count one hit of ``limit``."""
        self.hits.hit(limit, **fields)

    def connections(self) -> dict[str, int]:
        """Open connections per listener."""
        return {listener.name: len(listener.connections) for listener in self.listeners}

    # -- rendering -------------------------------------------------------------------

    async def render(self, connection: Connection, render: Render) -> None:
        """Run ``render`` in the pool when a slot is free, and answer with its response."""
        try:
            await self._acquire()
        except Busy:
            self.hit("render_queue")
            connection.respond(json_response(503, {"error": "too many renders in progress"}))
            return
        try:
            response = await self.loop.run_in_executor(self._executor, render.work)
        except Exception as exc:  # a bug costs one request, never the sidecar
            self._reporter.report("render", exc)
            response = json_response(500, {"error": "internal error while rendering"})
        finally:
            self._release()
        while len(self._unread) >= MAX_UNREAD:  # slow readers: the oldest makes room
            oldest = next(iter(self._unread))
            del self._unread[oldest]
            self.hit("buffered_bytes")
            if oldest.transport is not None:
                oldest.transport.abort()
        connection.respond(response)
        if connection.writable is not None:
            self._unread[connection] = None
            await connection.drained()
            self._unread.pop(connection, None)

    async def _acquire(self) -> None:
        if self._free:
            self._free -= 1
            return
        if len(self._waiting) >= self._max_waiting:
            raise Busy
        waiter: asyncio.Future[None] = self.loop.create_future()
        self._waiting.append(waiter)

        def give_up() -> None:
            if not waiter.done():
                waiter.set_exception(Busy())

        timer = self.loop.call_later(self.request_timeout, give_up)
        try:
            await waiter  # on success the releasing render handed its slot over
        finally:
            timer.cancel()
            if waiter in self._waiting:
                self._waiting.remove(waiter)

    def _release(self) -> None:
        while self._waiting:
            waiter = self._waiting.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return
        self._free += 1

    # -- lifecycle -------------------------------------------------------------------

    def start(self) -> None:
        """Serve in a daemon thread; returns once every listener accepts."""
        self._thread.start()
        self._ready.wait(10)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        for listener in self.listeners:
            listener.start()
        self.loop.call_soon(self._ready.set)
        self.loop.run_forever()
        for listener in self.listeners:
            listener.stop()
        self.loop.run_until_complete(asyncio.sleep(0))  # let connection_lost callbacks run
        self.loop.close()

    def stop(self) -> None:
        """Stop the loop, close the sockets and the render pool."""
        if self._thread.is_alive():
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(5)
        for listener in self.listeners:
            listener.sock.close()
        self._executor.shutdown(wait=False, cancel_futures=True)
