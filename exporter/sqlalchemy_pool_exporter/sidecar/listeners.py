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
contended, no thread hand-off. ``/metrics`` and ``/api/pools`` are rendered by worker
threads, one at a time each, with a few more waiting their turn for at most
``request_timeout`` and any beyond answered 503 at once (:mod:`.renders`). At most
:data:`MAX_UNREAD` rendered responses are being sent at once (others wait their turn;
a client gets ``request_timeout`` to read its response, or is dropped), so slow
readers can neither pile responses up in memory nor hold a renderer. However many scrapes arrive,
pushes keep the loop, and renders pause between pools and families while the loop
applies a push (:meth:`HttpServer.pause_for_requests`), so a push is not slowed by a
render beside it.
"""

from __future__ import annotations

import asyncio
import errno
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from sqlalchemy_pool_exporter.logs import RateLimitedReporter, get_logger
from sqlalchemy_pool_exporter.sidecar.http import EVICTABLE_AFTER, Connection
from sqlalchemy_pool_exporter.sidecar.limits import ByteBudget, LimitHits, ThrottledLog
from sqlalchemy_pool_exporter.sidecar.messages import App, Render, Response, json_response
from sqlalchemy_pool_exporter.sidecar.renders import LANES, Busy, RenderLane, Shared

log = get_logger(__name__)
_OUT_OF_RESOURCES = {errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM}
ACCEPT_BATCH = 64
#: Rendered responses being sent (waiting for their clients to read them) at once.
MAX_UNREAD = 4
#: Longest a render waits, at one of its pauses, for the loop to finish a request (s).
PAUSE = 0.02
MIN_BACKOFF, MAX_BACKOFF = 0.05, 1.0
#: Out of descriptors, connections idle this long (s) may be closed to accept others.
EMFILE_GRACE = 0.05


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
        # From here it counts as open, no longer as pending: counted as both for the
        # moment until _connect resumes, it would refuse a connection below the cap.
        self.pending -= 1
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
                if not self._evict(1):
                    conn.close()
                    continue
            conn.setblocking(False)
            self.pending += 1
            self.ctx.loop.create_task(self._connect(conn))

    async def _connect(self, conn: socket.socket) -> None:
        connection = Connection(self)
        try:
            await self.ctx.loop.connect_accepted_socket(lambda: connection, conn)
        except OSError:
            conn.close()
        finally:
            if connection.transport is None:  # never opened: still counted as pending
                self.pending -= 1

    def _evict(self, count: int = 1, after: float = EVICTABLE_AFTER) -> int:
        """Close up to ``count`` of the oldest connections overdue by ``after`` seconds."""
        now = time.monotonic()
        victims = [c for c in self.connections if c.overdue(now, after)][:count]
        for connection in victims:
            connection.drop(503, "too many connections; closed to make room", None)
            self.connections.pop(connection, None)
        return len(victims)

    def _out_of_descriptors(self, exc: OSError) -> None:
        loop = self.ctx.loop
        loop.remove_reader(self.sock)
        self.ctx.hit("file_descriptors", listener=self.name, error=exc.strerror or str(exc))
        # Out of descriptors, even a connection idle for a moment is worth less than one
        # waiting in the backlog: close the oldest idle ones (not those mid-request).
        if self._evict(ACCEPT_BATCH, after=EMFILE_GRACE):
            self.backoff = MIN_BACKOFF
            loop.call_soon(self._resume)  # after the evicted sockets have closed
            return
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
        max_buffered_bytes: int = 16 * 1024 * 1024,
    ) -> None:
        self.loop = asyncio.new_event_loop()
        self.hits = hits
        self.request_timeout = request_timeout
        self.idle_timeout = idle_timeout
        self.budget = ByteBudget(max_buffered_bytes)
        self.handling = 0
        self.listeners: list[Listener] = []
        self._executor = ThreadPoolExecutor(len(LANES), "pool-exporter-render")
        self.lanes = {name: RenderLane(self.loop, *size) for name, size in LANES.items()}
        self._shared: dict[str, Shared] = {}
        self._unread: dict[Connection, None] = {}  # rendered responses still being sent
        self._reporter = RateLimitedReporter(log)
        self._loop_log = ThrottledLog(log)
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

    def pause_for_requests(self, at_most: float = PAUSE) -> None:
        """In a render: wait (up to ``at_most`` s) while the loop handles a request.

        Under the GIL a render thread takes the CPU from the loop in turns of the switch
        interval; renders call this between pools or families, so a push being applied
        runs almost alone, and a render is only slowed, never stopped.
        """
        end = time.monotonic() + at_most
        while self.handling and time.monotonic() < end:
            time.sleep(0.0005)

    async def render(self, connection: Connection, render: Render) -> None:
        """Run ``render`` in the pool when a slot is free, and answer with its response."""
        shared = self._shared.get(render.share) if render.share else None
        if shared is not None and shared.usable(self.loop.time()):
            await self._send(connection, await asyncio.shield(shared.future))
            return
        lane = self.lanes[render.lane]
        try:
            await lane.acquire(self.request_timeout)
        except Busy:
            self.hit("render_queue", lane=render.lane)
            connection.respond(json_response(503, {"error": "too many renders in progress"}))
            return
        if render.share:
            shared = self._shared[render.share] = Shared(self.loop.create_future())
        began = self.loop.time()
        try:
            response = await self.loop.run_in_executor(self._executor, render.work)
        except Exception as exc:  # a bug costs one request, never the sidecar
            self._reporter.report("render", exc)
            response = json_response(500, {"error": "internal error while rendering"})
        finally:
            lane.release()
        if shared is not None:
            shared.done(response, began, self.loop.time())
        await self._send(connection, response)

    async def _send(self, connection: Connection, response: Response) -> None:
        """Answer; of rendered answers, at most MAX_UNREAD wait to be read at once."""
        while len(self._unread) >= MAX_UNREAD:
            # Wait for the oldest to be read; a slow reader is dropped at its deadline.
            oldest = next(iter(self._unread))
            await oldest.drained()
            self._unread.pop(oldest, None)
        connection.respond(response)
        if connection.writable is not None:
            self._unread[connection] = None
            await connection.drained()
            self._unread.pop(connection, None)

    def _loop_error(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        # asyncio logs each error with a traceback; one a client can cause again and
        # again must not become a log line each time.
        message = str(context.get("message", "event loop error"))
        exc = context.get("exception")
        error = f"{type(exc).__name__}: {exc}" if exc is not None else ""
        self._loop_log(message, "error", "event loop error", message=message, error=error)

    # -- lifecycle -------------------------------------------------------------------

    def start(self) -> None:
        """Serve in a daemon thread; returns once every listener accepts."""
        self._thread.start()
        self._ready.wait(10)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.set_exception_handler(self._loop_error)
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
