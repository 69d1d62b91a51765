"""The sidecar's two HTTP listeners, and :class:`Sidecar`, which owns them.

* **metrics** (``--listen``, all interfaces by default): ``GET /metrics`` (text or
  OpenMetrics by ``Accept``, gzip by ``Accept-Encoding``), ``GET /healthz``,
  ``GET /api/pools``, ``GET /api/diagnosis``. A ``POST /v1/push`` here is answered 404
  with where pushes go.
* **push** (``--push-listen``, loopback by default): ``POST /v1/push`` with an optional
  ``Authorization: Bearer <token>``; also ``GET /healthz``.

The metrics listener is a standard-library ``ThreadingHTTPServer``; the push listener is
one asyncio loop (:mod:`~sqlalchemy_pool_exporter.sidecar.pushserver`), since pushes are
many, small and CPU-bound. Every rejected push gets a 4xx with ``{"error": "<one
line>"}``; anything unexpected inside the handler becomes a 500 for that request only —
the sidecar never dies on input. ``Sidecar(settings).start()`` works in-process (tests,
demo) as well as under ``serve``; port 0 binds any free port, and the bound addresses
are on the object.
"""

from __future__ import annotations

import gzip
import hmac
import json
import socket
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

from prometheus_client import CollectorRegistry, ProcessCollector
from prometheus_client.exposition import choose_encoder

from sqlalchemy_pool_exporter.logs import RateLimitedReporter, get_logger
from sqlalchemy_pool_exporter.protocol.records import Limits, Push, PushRejected
from sqlalchemy_pool_exporter.protocol.validation import parse_push
from sqlalchemy_pool_exporter.protocol.wire import PUSH_PATH
from sqlalchemy_pool_exporter.sidecar.aggregator import Aggregator
from sqlalchemy_pool_exporter.sidecar.collector import PushCounters, SidecarCollector
from sqlalchemy_pool_exporter.sidecar.diagnosis import (
    diagnosis_document,
    pools_document,
    thresholds_from_query,
)
from sqlalchemy_pool_exporter.sidecar.keeper import StateKeeper
from sqlalchemy_pool_exporter.sidecar.pushserver import PushServer
from sqlalchemy_pool_exporter.sidecar.settings import SidecarSettings

log = get_logger(__name__)
#: The answer to a push sent to the metrics listener instead of the push listener.
PUSH_TO_METRICS_PORT = (
    "pushes go to the push listener (POOL_EXPORTER_PUSH_LISTEN), not the metrics port"
)
MAX_DISCARDED_BODY = 1_048_576


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128


class _Server6(_Server):
    address_family = socket.AF_INET6


class ListenError(OSError):
    """A listener could not be bound; ``setting`` and ``address`` say which one."""

    def __init__(self, setting: str, address: str, cause: OSError) -> None:
        # socket.create_server appends the address to strerror; say it once, as given.
        reason = (cause.strerror or str(cause)).split(" (while attempting to bind", 1)[0]
        super().__init__(cause.errno, reason)
        self.setting = setting
        self.address = address


def _split(hostport: str) -> tuple[str, int]:
    host, _, port = hostport.rpartition(":")
    return host.strip("[]"), int(port)


class Sidecar:
    """Aggregator, registry and both listeners of one sidecar."""

    def __init__(
        self,
        settings: SidecarSettings | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings if settings is not None else SidecarSettings()
        s = self.settings
        self.aggregator = Aggregator(
            max_processes=s.max_processes,
            expiry_factor=s.expiry_factor,
            retention=s.retired_retention if s.per_process else None,
            clock=clock,
            on_expire=self._expired,
        )
        self.keeper = StateKeeper(s.state_dir, self.aggregator) if s.state_dir else None
        self.counters = PushCounters()
        self.limits = Limits(
            max_pools=s.max_pools,
            max_label_length=s.max_label_length,
            max_body_bytes=s.max_body_bytes,
        )
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(
            SidecarCollector(
                self.aggregator, self.counters, per_process=s.per_process, keeper=self.keeper
            )
        )
        ProcessCollector(registry=self.registry)
        self._token = s.token.get_secret_value().encode() if s.token else None
        self._reporter = RateLimitedReporter(log)
        self._log_lock = threading.Lock()
        self._last_logged: dict[str, float] = {}
        self._servers: list[ThreadingHTTPServer] = []
        self._threads: list[threading.Thread] = []
        self.metrics_address: tuple[str, int] = ("", 0)
        self.push_address: tuple[str, int] = ("", 0)
        self._push: PushServer | None = None
        #: the database probe serving this sidecar's server view (``serve`` sets it)
        self.probe: Any = None

    # -- lifecycle ----------------------------------------------------------------

    def start(self) -> Sidecar:
        """Restore any saved state, bind both listeners (port 0 = any free port), serve them."""
        if self.keeper is not None:
            self.keeper.open()  # before the first push can arrive
        try:
            try:
                metrics = self._bind(self.settings.listen, _metrics_handler(self))
            except OSError as exc:
                raise ListenError("listen", self.settings.listen, exc) from exc
            try:
                host, port = _split(self.settings.push_listen)
                family = socket.AF_INET6 if ":" in host else socket.AF_INET
                sock = socket.create_server((host, port), family=family, backlog=256)
            except OSError as exc:
                metrics.server_close()
                raise ListenError("push_listen", self.settings.push_listen, exc) from exc
        except ListenError:
            if self.keeper is not None:
                self.keeper.close(save=False)
            raise
        self._push = PushServer(
            sock, self.ingest, self.check_head, self.rejected, self.aggregator.live_count
        )
        self._push.start()
        self._servers = [metrics]
        self.metrics_address = (str(metrics.server_address[0]), int(metrics.server_address[1]))
        self.push_address = (str(sock.getsockname()[0]), int(sock.getsockname()[1]))
        thread = threading.Thread(
            target=metrics.serve_forever,
            kwargs={"poll_interval": 0.2},
            name="pool-exporter-metrics",
            daemon=True,
        )
        thread.start()
        self._threads.append(thread)
        if self.keeper is not None:
            self.keeper.start()
        return self

    def stop(self) -> None:
        """Stop both listeners and close their sockets."""
        if self._push is not None:
            self._push.stop()
            self._push = None
        for server in self._servers:
            server.shutdown()
            server.server_close()
        for thread in self._threads:
            thread.join(5)
        self._servers, self._threads = [], []
        if self.keeper is not None:
            self.keeper.close()  # the last save, once no push can arrive any more

    def __enter__(self) -> Sidecar:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @staticmethod
    def _bind(hostport: str, handler: type[BaseHTTPRequestHandler]) -> ThreadingHTTPServer:
        host, port = _split(hostport)
        cls = _Server6 if ":" in host else _Server
        return cls((host, port), handler)

    @property
    def metrics_url(self) -> str:
        """Connectable base URL of the metrics listener (``http://host:port``)."""
        return _url(self.metrics_address)

    @property
    def push_url(self) -> str:
        """Connectable URL of the push endpoint (``http://host:port/v1/push``)."""
        return _url(self.push_address) + PUSH_PATH

    # -- request handling (also callable without HTTP) ------------------------------

    def authorized(self, header: str | None) -> bool:
        """True if no token is configured or ``header`` carries the right bearer token."""
        if self._token is None:
            return True
        scheme, _, given = (header or "").partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(
            given.strip().encode(), self._token
        )

    def check_head(
        self, authorization: str | None, content_length: str | None, transfer_encoding: str | None
    ) -> tuple[int, str, str] | None:
        """Rejection (status, reason, message) decided by a push's headers alone, or None."""
        if not self.authorized(authorization):
            return 401, "unauthorized", "missing or wrong bearer token"
        if transfer_encoding or content_length is None or not content_length.isdigit():
            return 411, "malformed_json", "Content-Length required"
        if int(content_length) > self.limits.max_body_bytes:
            return 413, "body_too_large", f"body over {self.limits.max_body_bytes} bytes"
        return None

    def ingest(self, body: bytes) -> tuple[int, dict[str, Any]]:
        """Validate and apply one push body; returns (HTTP status, JSON response)."""
        try:
            push = parse_push(body, self.limits)
            self.aggregator.apply(push)
        except PushRejected as exc:
            return self.rejected(exc)
        except Exception as exc:  # a bug must cost one request, never the sidecar
            self._reporter.report("push", exc)
            return 500, {"error": "internal error while applying the push"}
        self.counters.accepted()
        return 200, {"status": "accepted"}

    @staticmethod
    def _expired(push: Push, silent: float) -> None:
        log.info(
            "process expired",
            app=push.app,
            process=push.process,
            silent_seconds=round(silent, 1),
            pools=len(push.pools),
        )

    def rejected(self, exc: PushRejected) -> tuple[int, dict[str, Any]]:
        """Count and log (rate-limited) one rejection; returns its response."""
        self.counters.reject(exc.reason)
        now = time.monotonic()
        with self._log_lock:  # one line per reason per minute, however many arrive
            last = self._last_logged.get(exc.reason)
            if last is None or now - last >= 60.0:
                self._last_logged[exc.reason] = now
                log.warning(
                    "push rejected",
                    reason=exc.reason,
                    status=exc.status,
                    error=exc.message,
                    total=self.counters.rejected[exc.reason],
                )
        return exc.status, {"error": exc.message}


def _url(address: tuple[str, int]) -> str:
    host, port = address
    if host in ("0.0.0.0", ""):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    timeout = 30  # a silent client must not hold a thread forever
    sidecar: Sidecar

    def log_message(self, format: str, *args: Any) -> None:
        pass  # one line per request would drown the real logs

    def send_body(
        self, status: int, body: bytes, content_type: str, headers: dict[str, str] | None = None
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        if self.close_connection:
            self.send_header("Connection", "close")
        # Headers and body in one write: two small writes on a keep-alive connection
        # meet the client's delayed ACK and stall ~40 ms each.
        buffer: list[bytes] = self._headers_buffer  # type: ignore[attr-defined]
        buffer.append(b"\r\n")
        if self.command != "HEAD":
            buffer.append(body)
        self.flush_headers()

    def send_json(self, status: int, doc: Any) -> None:
        self.send_body(status, json.dumps(doc, separators=(",", ":")).encode(), "application/json")

    def discard_body(self) -> None:
        """Read a request body this handler does not use (or give up the connection)."""
        length = self.headers.get("Content-Length") or ""
        if length.isdigit() and int(length) <= MAX_DISCARDED_BODY:
            self.rfile.read(int(length))
        else:  # unknown or too long to read for nothing: answer, then close
            self.close_connection = True

    def healthz(self) -> None:
        self.send_json(200, {"status": "ok", "processes": self.sidecar.aggregator.live_count()})


def _metrics_handler(sidecar: Sidecar) -> type[BaseHTTPRequestHandler]:
    class MetricsHandler(_Handler):
        def do_GET(self) -> None:
            path = urlsplit(self.path).path
            if path == "/metrics":
                encoder, content_type = choose_encoder(self.headers.get("Accept") or "")
                body = encoder(sidecar.registry)
                extra = {}
                if "gzip" in (self.headers.get("Accept-Encoding") or ""):
                    body, extra = gzip.compress(body, 1), {"Content-Encoding": "gzip"}
                self.send_body(200, body, content_type, extra)
            elif path == "/healthz":
                self.healthz()
            elif path == "/api/pools":
                sidecar.aggregator.expire()
                self.send_json(200, pools_document(sidecar.aggregator, sidecar.probe))
            elif path == "/api/diagnosis":
                try:
                    limits = thresholds_from_query(urlsplit(self.path).query)
                except ValueError as exc:
                    self.send_json(400, {"error": str(exc)})
                    return
                sidecar.aggregator.expire()
                doc = diagnosis_document(sidecar.aggregator, sidecar.probe, limits)
                self.send_json(200, doc)
            elif path == "/":
                self.send_body(
                    200,
                    b"sqlalchemy-pool-exporter sidecar:"
                    b" /metrics /healthz /api/pools /api/diagnosis\n",
                    "text/plain; charset=utf-8",
                )
            else:
                self.send_json(404, {"error": f"no such path {path[:80]!r}"})

        do_HEAD = do_GET

        def do_POST(self) -> None:
            # An app whose push URL names this port would otherwise get a bare 501 and
            # log only that: say where pushes go instead.
            path = urlsplit(self.path).path
            self.discard_body()
            if path == PUSH_PATH:
                self.send_json(404, {"error": PUSH_TO_METRICS_PORT})
            else:
                self.send_json(404, {"error": f"no such path {path[:80]!r}"})

    MetricsHandler.sidecar = sidecar
    return MetricsHandler
