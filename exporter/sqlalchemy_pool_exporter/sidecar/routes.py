"""What each listener answers: the push listener and the metrics listener.

* **push** (loopback by default): ``POST /v1/push`` — headers are checked first (token,
  ``Content-Length``, size), so a wrong token or an oversized body costs nothing and
  the connection is closed — and ``GET /healthz``.
* **metrics** (all interfaces by default): ``GET /metrics`` (text or OpenMetrics by
  ``Accept``, gzip by ``Accept-Encoding``), ``GET /healthz`` and ``GET /``.

``GET /api/pools`` and ``GET /api/diagnosis`` are on whichever listener ``api_listen``
names (the push listener by default), or on neither; with a database probe, held
connections in ``/api/pools`` carry their server state
(:mod:`~sqlalchemy_pool_exporter.sidecar.diagnosis`). A ``POST /v1/push`` sent to the
metrics listener is answered 404 with where pushes go. ``/metrics`` and the API are
rendered in the bounded render pool (:mod:`~sqlalchemy_pool_exporter.sidecar.listeners`);
pushes and health checks are answered on the event loop. Anything else is a one-line JSON error.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING
from urllib.parse import urlencode

from prometheus_client import CollectorRegistry
from prometheus_client.core import Metric
from prometheus_client.exposition import choose_encoder

from sqlalchemy_pool_exporter.protocol.wire import PUSH_PATH
from sqlalchemy_pool_exporter.sidecar.api import api_json
from sqlalchemy_pool_exporter.sidecar.diagnosis import (
    diagnosis_document,
    pools_document,
    thresholds_from_query,
)
from sqlalchemy_pool_exporter.sidecar.messages import Render, Request, Response, json_response

if TYPE_CHECKING:
    from sqlalchemy_pool_exporter.sidecar.server import Sidecar

_READ = ("GET", "HEAD")
_API = ("/api/pools", "/api/diagnosis")
#: The answer to a push sent to the metrics listener instead of the push listener.
PUSH_TO_METRICS_PORT = (
    "pushes go to the push listener (POOL_EXPORTER_PUSH_LISTEN), not the metrics port"
)


def _healthz(sidecar: Sidecar) -> Response:
    return json_response(200, {"status": "ok", "processes": sidecar.aggregator.live_count()})


def _api(sidecar: Sidecar, request: Request) -> Response | Render:
    if request.path == "/api/diagnosis":
        return _diagnosis(sidecar, request)
    instances = request.query.get("instances", "") in ("1", "true", "yes")

    def work() -> Response:
        agg = sidecar.aggregator
        agg.expire()
        if sidecar.probe is not None:  # held connections joined with their server sessions
            doc = pools_document(agg, sidecar.probe, instances=instances)
            return Response(200, json.dumps(doc, separators=(",", ":")).encode())
        return Response(200, api_json(agg, instances=instances, pause=sidecar.yield_to_pushes))

    return Render(work, lane="api", share=f"api:{int(instances)}")


def _diagnosis(sidecar: Sidecar, request: Request) -> Response | Render:
    try:
        limits = thresholds_from_query(urlencode(request.query))
    except ValueError as exc:
        return json_response(400, {"error": str(exc)})

    def work() -> Response:
        sidecar.aggregator.expire()
        doc = diagnosis_document(sidecar.aggregator, sidecar.probe, limits)
        return Response(200, json.dumps(doc, separators=(",", ":")).encode())

    return Render(work, lane="api")


class _Yielding:
    """A registry for rendering that pauses between families while a push is applied."""

    def __init__(self, registry: CollectorRegistry, pause: Callable[[], None]) -> None:
        self.registry = registry
        self.pause = pause

    def collect(self) -> Iterator[Metric]:
        """Every family of the registry, one pause before each."""
        for family in self.registry.collect():
            self.pause()
            yield family


class PushApp:
    """The push listener."""

    def __init__(self, sidecar: Sidecar) -> None:
        self.sidecar = sidecar
        self.api = sidecar.settings.api_listen == "push"

    def head(self, request: Request, length: int) -> Response | Render | None:
        """Health and API at once; a push's headers checked before its body is read."""
        path = request.path
        if request.method in _READ and path == "/healthz":
            return _healthz(self.sidecar)
        if self.api and request.method in _READ and path in _API:
            return _api(self.sidecar, request)
        if path != PUSH_PATH:
            return json_response(404, {"error": f"POST pushes to {PUSH_PATH}"}, close=True)
        if request.method != "POST":
            return json_response(405, {"error": f"POST pushes to {PUSH_PATH}"}, close=True)
        headers = request.headers
        rejection = self.sidecar.check_head(
            headers.get("authorization"),
            headers.get("content-length"),
            headers.get("transfer-encoding"),
        )
        if rejection is not None:
            status, doc = self.sidecar.rejected_head(*rejection)
            return json_response(status, doc, close=True)
        return None

    def handle(self, request: Request) -> Response:
        """Apply one push."""
        return json_response(*self.sidecar.ingest(request.body))


class MetricsApp:
    """The metrics listener: read-only."""

    def __init__(self, sidecar: Sidecar) -> None:
        self.sidecar = sidecar
        self.api = sidecar.settings.api_listen == "metrics"

    def head(self, request: Request, length: int) -> Response | Render | None:
        """Every request is answered from its head: nothing here takes a body."""
        path = request.path
        if request.method == "POST" and path == PUSH_PATH:
            # An app whose push URL names this port would otherwise get a bare 405 and
            # log only that: say where pushes go instead.
            return json_response(404, {"error": PUSH_TO_METRICS_PORT}, close=True)
        if request.method not in _READ:
            return json_response(405, {"error": "read-only: GET /metrics"}, close=True)
        if path == "/metrics":
            return self._metrics(request)
        if path == "/healthz":
            return _healthz(self.sidecar)
        if path in _API and self.api:
            return _api(self.sidecar, request)
        if path == "/":
            index = "/metrics /healthz" + (" /api/pools /api/diagnosis" if self.api else "")
            return Response(
                200,
                f"sqlalchemy-pool-exporter sidecar: {index}\n".encode(),
                "text/plain; charset=utf-8",
            )
        return json_response(404, {"error": f"no such path {path[:80]!r}"})

    def handle(self, request: Request) -> Response:
        """Not reached: :meth:`head` answers everything."""
        return json_response(405, {"error": "read-only: GET /metrics"}, close=True)

    def _metrics(self, request: Request) -> Render:
        accept = request.headers.get("accept", "")
        gzipped = "gzip" in request.headers.get("accept-encoding", "")
        registry = _Yielding(self.sidecar.registry, self.sidecar.yield_to_pushes)
        omit_body = request.method == "HEAD"

        def work() -> Response:
            encoder, content_type = choose_encoder(accept)
            body = encoder(registry)  # type: ignore[arg-type]  # has collect(), as needed
            headers = {}
            if gzipped:
                body, headers = gzip.compress(body, 1), {"Content-Encoding": "gzip"}
            return Response(200, body, content_type, headers, omit_body=omit_body)

        return Render(work)
