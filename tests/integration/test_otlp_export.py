"""Acceptance: OTLP/HTTP export of the pool metrics to a real receiver, decoded with the proto.

A tiny OTLP/HTTP receiver (``POST /v1/metrics`` on 127.0.0.1 port 0, protobuf decoded
with the opentelemetry-proto package) takes what the SDK's OTLP exporter sends; it must
carry exactly what an in-memory reader on the same MeterProvider reads, and exactly what
the pool did.
"""

from __future__ import annotations

import gzip
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader, PeriodicExportingMetricReader
from sqlalchemy import Engine

import sqlalchemy_pool_exporter
from sqlalchemy_pool_exporter.instrumentation.histogram import DEFAULT_BUCKETS
from sqlalchemy_pool_exporter.protocol.catalog import OTEL_POOL_ATTRIBUTE
from tests.otel_points import Point, named, proto_points, sdk_points

pytestmark = pytest.mark.integration


class Receiver(ThreadingHTTPServer):
    """Collects every ``ExportMetricsServiceRequest`` posted to ``/v1/metrics``."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.requests: list[Any] = []
        self.content_types: list[str] = []

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/v1/metrics"


class _Handler(BaseHTTPRequestHandler):
    server: Receiver

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        if self.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        if self.path != "/v1/metrics":
            self.send_error(404)
            return
        self.server.content_types.append(self.headers.get("Content-Type", ""))
        self.server.requests.append(ExportMetricsServiceRequest.FromString(body))
        reply = ExportMetricsServiceResponse().SerializeToString()
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def test_otlp_http_export_carries_the_exact_values(
    receiver: Receiver, make_engine: Callable[..., Engine]
) -> None:
    exporter = OTLPMetricExporter(endpoint=receiver.endpoint, timeout=10)
    # A long interval: the test decides when to export (force_flush).
    periodic = PeriodicExportingMetricReader(exporter, export_interval_millis=3_600_000)
    memory = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[periodic, memory])
    try:
        engine = make_engine(pool_size=4, max_overflow=0)
        sqlalchemy_pool_exporter.instrument(
            engine, name="main", registry=None, meter_provider=provider
        )
        for _ in range(30):
            with engine.connect() as conn:
                conn.exec_driver_sql("SELECT 1")
        held = [engine.connect() for _ in range(3)]
        assert provider.force_flush(10_000)
        (request,) = receiver.requests
        assert receiver.content_types == ["application/x-protobuf"]
        exported = proto_points(request)
        read = sdk_points(memory.get_metrics_data())
        # Everything but the age of the oldest checkout, which grew between the two reads.
        aging = [k for k in read if k[0] == "sqlalchemy.pool.oldest_checkout"]
        assert len(aging) == 1
        assert 0 < (exported.pop(aging[0]).value or 0) <= (read.pop(aging[0]).value or 0)
        assert exported == read

        pool = {OTEL_POOL_ATTRIBUTE: "main"}
        used = pool | {"db.client.connection.state": "used"}
        idle = pool | {"db.client.connection.state": "idle"}
        assert named(exported, "db.client.connection.count", used) == Point("{connection}", 3)
        assert named(exported, "db.client.connection.count", idle) == Point("{connection}", 0)
        assert named(exported, "db.client.connection.max", pool) == Point("{connection}", 4)
        assert named(exported, "db.client.connection.timeouts", pool) == Point("{timeout}", 0)
        wait = named(exported, "db.client.connection.wait_time", pool)
        use = named(exported, "db.client.connection.use_time", pool)
        assert (wait.count, use.count) == (33, 30)
        assert wait.bounds == use.bounds == DEFAULT_BUCKETS
        (stats,) = [
            i.stats for i in sqlalchemy_pool_exporter.instrumentations() if i.engine is engine
        ]
        data = stats.read(top=0).histograms
        assert wait.sum == pytest.approx(data["wait_seconds"]["sum"], rel=1e-12)
        assert use.sum == pytest.approx(data["use_seconds"]["sum"], rel=1e-12)
        assert sum(wait.buckets) == 33 and sum(use.buckets) == 30
        for conn in held:
            conn.close()
    finally:
        provider.shutdown()
