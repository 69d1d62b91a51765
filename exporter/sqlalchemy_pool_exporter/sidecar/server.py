""":class:`Sidecar`: the aggregator, its registry, and both HTTP listeners, wired together.

* **metrics** (``--listen``, all interfaces by default): ``GET /metrics`` (text or
  OpenMetrics by ``Accept``, gzip by ``Accept-Encoding``), ``GET /healthz``. A
  ``POST /v1/push`` here is answered 404 with where pushes go.
* **push** (``--push-listen``, loopback by default): ``POST /v1/push`` with an optional
  ``Authorization: Bearer <token>``; also ``GET /healthz`` and, by default,
  ``GET /api/pools`` (``--api-listen`` moves it to the metrics listener or turns it off).

Both listeners are served by one bounded asyncio server
(:mod:`~sqlalchemy_pool_exporter.sidecar.listeners`; what each answers:
:mod:`~sqlalchemy_pool_exporter.sidecar.routes`). Every rejected push gets a 4xx with
``{"error": "<one line>"}``, counted by reason and logged at most once a minute per
reason; anything unexpected inside a handler becomes a 500 for that request only — the
sidecar never dies on input. A push is also refused (429 ``state_too_large``) if
keeping it would take the live processes' pushes past ``max_state_bytes``.
``Sidecar(settings).start()`` works in-process (tests, demo) as well as under ``serve``;
port 0 binds any free port, and the bound addresses are on the object.
"""

from __future__ import annotations

import hmac
import socket
import time
from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry, ProcessCollector

from sqlalchemy_pool_exporter.logs import RateLimitedReporter, get_logger
from sqlalchemy_pool_exporter.protocol.records import Limits, Push, PushRejected
from sqlalchemy_pool_exporter.protocol.validation import parse_push
from sqlalchemy_pool_exporter.protocol.wire import PUSH_PATH
from sqlalchemy_pool_exporter.sidecar.aggregator import Aggregator
from sqlalchemy_pool_exporter.sidecar.ceiling import SeriesCeiling
from sqlalchemy_pool_exporter.sidecar.collector import PushCounters, SidecarCollector
from sqlalchemy_pool_exporter.sidecar.health import HealthCollector
from sqlalchemy_pool_exporter.sidecar.keeper import StateKeeper
from sqlalchemy_pool_exporter.sidecar.limits import LimitHits, StateBytes, ThrottledLog
from sqlalchemy_pool_exporter.sidecar.listeners import HttpServer
from sqlalchemy_pool_exporter.sidecar.process import connection_cap
from sqlalchemy_pool_exporter.sidecar.routes import PUSH_TO_METRICS_PORT, MetricsApp, PushApp
from sqlalchemy_pool_exporter.sidecar.secrets import resolve_secrets
from sqlalchemy_pool_exporter.sidecar.settings import SidecarSettings

__all__ = ["PUSH_TO_METRICS_PORT", "ListenError", "Sidecar"]

log = get_logger(__name__)
#: "process expired" lines logged per minute before they are only counted.
EXPIRY_LINES = 10


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


def _bind(hostport: str) -> socket.socket:
    host, port = _split(hostport)
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(512)
    except OSError:
        sock.close()
        raise
    return sock


class Sidecar:
    """Aggregator, registry and both listeners of one sidecar."""

    def __init__(
        self,
        settings: SidecarSettings | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = resolve_secrets(settings if settings is not None else SidecarSettings())
        s = self.settings
        self.hits = LimitHits(log)
        self.state = StateBytes(s.max_state_bytes)
        self.aggregator = Aggregator(
            max_processes=s.max_processes,
            expiry_factor=s.expiry_factor,
            retention=s.retired_retention if s.per_process else None,
            clock=clock,
            on_expire=self._expired,
            max_groups=s.max_groups,
            group_retention=s.group_retention,
        )
        self.keeper = StateKeeper(s.state_dir, self.aggregator) if s.state_dir else None
        self.counters = PushCounters()
        self.limits = Limits(
            max_pools=s.max_pools,
            max_label_length=s.max_label_length,
            max_body_bytes=s.max_body_bytes,
        )
        self.ceiling = SeriesCeiling(s.max_series, self.hits)
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(
            SidecarCollector(
                self.aggregator,
                self.counters,
                per_process=s.per_process,
                ceiling=self.ceiling,
                keeper=self.keeper,
            )
        )
        self.registry.register(
            HealthCollector(self.hits, self.aggregator, self.state, self.ceiling, self._open)
        )
        ProcessCollector(registry=self.registry)
        self._token = s.token.get_secret_value().encode() if s.token else None
        self._reporter = RateLimitedReporter(log)
        self._log = ThrottledLog(log)
        self._expiries = ThrottledLog(log, burst=EXPIRY_LINES)
        self._http: HttpServer | None = None
        self.metrics_address: tuple[str, int] = ("", 0)
        self.push_address: tuple[str, int] = ("", 0)
        #: the database probe serving this sidecar's server view (``serve`` sets it)
        self.probe: Any = None

    # -- lifecycle ----------------------------------------------------------------

    def start(self) -> Sidecar:
        """Restore any saved state, bind both listeners (port 0 = any free port), serve them."""
        s = self.settings
        if self.keeper is not None:
            self.keeper.open()  # before the first push can arrive
        try:
            try:
                metrics = _bind(s.listen)
            except OSError as exc:
                raise ListenError("listen", s.listen, exc) from exc
            try:
                push = _bind(s.push_listen)
            except OSError as exc:
                metrics.close()
                raise ListenError("push_listen", s.push_listen, exc) from exc
        except ListenError:
            if self.keeper is not None:
                self.keeper.close(save=False)
            raise
        cap = connection_cap(s.max_connections, listeners=2)
        self._http = HttpServer(
            hits=self.hits,
            request_timeout=s.request_timeout,
            max_buffered_bytes=max(s.max_buffered_bytes, s.max_body_bytes),
        )
        self._http.listen("metrics", metrics, MetricsApp(self), cap)
        self._http.listen("push", push, PushApp(self), cap)
        self._http.start()
        self.metrics_address = (str(metrics.getsockname()[0]), int(metrics.getsockname()[1]))
        self.push_address = (str(push.getsockname()[0]), int(push.getsockname()[1]))
        if self.keeper is not None:
            self.keeper.start()
        return self

    def stop(self) -> None:
        """Stop both listeners and close their sockets."""
        if self._http is not None:
            self._http.stop()
            self._http = None
        if self.keeper is not None:
            self.keeper.close()  # the last save, once no push can arrive any more

    def __enter__(self) -> Sidecar:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def yield_to_pushes(self) -> None:
        """Called by renders between pools or families: let a push being applied finish."""
        http = self._http
        if http is not None:
            http.pause_for_requests()

    def _open(self) -> dict[str, int]:
        http = self._http
        return http.connections() if http is not None else {"metrics": 0, "push": 0}

    @property
    def metrics_url(self) -> str:
        """Connectable base URL of the metrics listener (``http://host:port``)."""
        return _url(self.metrics_address)

    @property
    def push_url(self) -> str:
        """Connectable URL of the push endpoint (``http://host:port/v1/push``)."""
        return _url(self.push_address) + PUSH_PATH

    @property
    def api_url(self) -> str | None:
        """Connectable URL of ``/api/pools``, or None where it is not served."""
        where = self.settings.api_listen
        if where == "off":
            return None
        return _url(self.push_address if where == "push" else self.metrics_address) + "/api/pools"

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

    def rejected_head(self, status: int, reason: str, message: str) -> tuple[int, dict[str, Any]]:
        """Count and log a push refused from its headers alone."""
        return self.rejected(PushRejected(status, reason, message))

    def ingest(self, body: bytes) -> tuple[int, dict[str, Any]]:
        """Validate and apply one push body; returns (HTTP status, JSON response)."""
        try:
            push = parse_push(body, self.limits)
            if not push.final and not self.state.fits(push.instance, len(body)):
                raise PushRejected(
                    429,
                    "state_too_large",
                    f"live processes' pushes would exceed {self.state.capacity} bytes",
                )
            self.aggregator.apply(push)
        except PushRejected as exc:
            return self.rejected(exc)
        except Exception as exc:  # a bug must cost one request, never the sidecar
            self._reporter.report("push", exc)
            return 500, {"error": "internal error while applying the push"}
        if push.final:
            self.state.release(push.instance)
        else:
            self.state.hold(push.instance, len(body))
        self.counters.accepted()
        return 200, {"status": "accepted"}

    def _expired(self, push: Push, silent: float) -> None:
        self.state.release(push.instance)
        self._expiries(
            "expired",
            "info",
            "process expired",
            app=push.app,
            process=push.process,
            silent_seconds=round(silent, 1),
            pools=len(push.pools),
        )

    def rejected(self, exc: PushRejected) -> tuple[int, dict[str, Any]]:
        """Count and log (once a minute per reason) one rejection; returns its response."""
        self.counters.reject(exc.reason)
        self._log(
            exc.reason,
            "warning",
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
