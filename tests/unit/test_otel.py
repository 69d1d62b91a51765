"""OpenTelemetry: exact values through the SDK's in-memory reader, on real SQLite engines."""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest
from opentelemetry.sdk.metrics import Histogram, MeterProvider
from opentelemetry.sdk.metrics.export import AggregationTemporality, InMemoryMetricReader
from sqlalchemy import Engine, exc

import sqlalchemy_pool_exporter
from sqlalchemy_pool_exporter.instrumentation import otel as otel_bridge
from sqlalchemy_pool_exporter.instrumentation.histogram import DEFAULT_BUCKETS
from sqlalchemy_pool_exporter.protocol.catalog import (
    OTEL_IDLE_MIN,
    OTEL_POOL_ATTRIBUTE,
    POOL_METRICS,
    otel_instrument,
)
from tests.otel_points import Key, Point, named, sdk_points

POOL = {OTEL_POOL_ATTRIBUTE: "main"}
USED = POOL | {"db.client.connection.state": "used"}
IDLE = POOL | {"db.client.connection.state": "idle"}


@dataclass
class Otel:
    """A private SDK MeterProvider (never the global one) with an in-memory reader."""

    provider: MeterProvider
    reader: InMemoryMetricReader

    def collect(self) -> dict[Key, Point]:
        """Collect now: ``{(name, attributes): Point}``."""
        return sdk_points(self.reader.get_metrics_data())


@pytest.fixture
def otel() -> Iterator[Otel]:
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    yield Otel(provider, reader)
    provider.shutdown()


def stats_of(name: str) -> sqlalchemy_pool_exporter.PoolStats:
    (stats,) = [
        i.stats for i in sqlalchemy_pool_exporter.instrumentations() if i.stats.name == name
    ]
    return stats


def own_buckets(cumulative: list[int]) -> tuple[int, ...]:
    """Prometheus' cumulative counts as OpenTelemetry's per-bucket counts."""
    return tuple(b - a for a, b in itertools.pairwise([0, *cumulative]))


def assert_histogram(point: Point, data: dict[str, object], count: int) -> None:
    """``point`` carries exactly the exporter's own histogram ``data``, in seconds."""
    assert point.unit == "s"
    assert point.count == count == data["count"]
    assert point.bounds == DEFAULT_BUCKETS
    assert point.buckets == own_buckets(data["counts"])  # type: ignore[arg-type]
    assert point.sum == pytest.approx(data["sum"], rel=1e-12, abs=1e-15)


def test_semantic_convention_values_are_exact(
    make_engine: Callable[..., Engine], otel: Otel
) -> None:
    engine = make_engine(pool_size=3, max_overflow=2, pool_timeout=2)
    sqlalchemy_pool_exporter.instrument(
        engine, name="main", registry=None, meter_provider=otel.provider
    )
    stats = stats_of("main")
    for _ in range(20):
        with engine.connect() as conn:
            conn.exec_driver_sql("SELECT 1")
    held = [engine.connect() for _ in range(5)]
    failed: list[BaseException] = []

    def wait() -> None:
        try:
            engine.connect()
        except exc.TimeoutError as e:
            failed.append(e)

    waiter = threading.Thread(target=wait)
    waiter.start()
    deadline = 500  # polls of 20 ms
    while stats.read(top=0).pending != 1 and deadline:
        waiter.join(0.02)
        deadline -= 1
    points = otel.collect()  # the waiter is still inside pool.connect()
    assert named(points, "db.client.connection.pending_requests", POOL) == Point("{request}", 1)
    assert named(points, "db.client.connection.count", USED) == Point("{connection}", 5)
    assert named(points, "db.client.connection.count", IDLE) == Point("{connection}", 0)
    assert named(points, "db.client.connection.max", POOL) == Point("{connection}", 5)
    assert named(points, "db.client.connection.idle.max", POOL) == Point("{connection}", 3)
    assert named(points, "db.client.connection.idle.min", POOL) == Point("{connection}", 0)
    assert named(points, "db.client.connection.timeouts", POOL) == Point("{timeout}", 0)
    assert named(points, "sqlalchemy.pool.checkouts", POOL) == Point("{checkout}", 25)
    assert named(points, "sqlalchemy.pool.overflow", POOL) == Point("{connection}", 2)
    assert named(points, "sqlalchemy.pool.utilization", POOL) == Point("1", 1.0)
    reading = stats.read(top=0).histograms
    assert_histogram(
        named(points, "db.client.connection.wait_time", POOL), reading["wait_seconds"], 25
    )
    assert_histogram(
        named(points, "db.client.connection.use_time", POOL), reading["use_seconds"], 20
    )
    assert_histogram(
        named(points, "db.client.connection.create_time", POOL), reading["connect_seconds"], 5
    )

    waiter.join(10)
    assert len(failed) == 1
    points = otel.collect()
    assert named(points, "db.client.connection.timeouts", POOL) == Point("{timeout}", 1)
    assert named(points, "db.client.connection.pending_requests", POOL) == Point("{request}", 0)
    reading = stats.read(top=0).histograms
    # The timed-out wait is a wait too, as in sqlalchemy_pool_wait_seconds.
    assert_histogram(
        named(points, "db.client.connection.wait_time", POOL), reading["wait_seconds"], 26
    )
    assert named(points, "sqlalchemy.pool.checkouts", POOL) == Point("{checkout}", 25)

    for conn in held:
        conn.close()
    points = otel.collect()
    # Back in a pool of 3: the 2 overflow connections are closed on return.
    assert named(points, "db.client.connection.count", USED) == Point("{connection}", 0)
    assert named(points, "db.client.connection.count", IDLE) == Point("{connection}", 3)
    assert named(points, "sqlalchemy.pool.connections_closed", POOL) == Point("{connection}", 2)
    reading = stats.read(top=0).histograms
    assert_histogram(
        named(points, "db.client.connection.use_time", POOL), reading["use_seconds"], 25
    )
    assert_histogram(
        named(points, "db.client.connection.wait_time", POOL), reading["wait_seconds"], 26
    )


def test_every_pool_row_of_the_catalog_is_reported_under_its_otel_name(
    make_engine: Callable[..., Engine], otel: Otel
) -> None:
    engine = make_engine(pool_size=2, max_overflow=1, pool_recycle=3600)
    sqlalchemy_pool_exporter.instrument(
        engine, name="main", registry=None, meter_provider=otel.provider
    )
    with engine.connect():
        pass
    points = otel.collect()
    expected: dict[str, str] = dict(otel_instrument(row) for row in POOL_METRICS)
    expected[OTEL_IDLE_MIN[0]] = OTEL_IDLE_MIN[1]
    assert {name: p.unit for (name, _), p in points.items()} == expected
    for row in POOL_METRICS:
        name = otel_instrument(row)[0]
        attribute_sets = {attrs for (n, attrs), _ in points.items() if n == name}
        assert all((OTEL_POOL_ATTRIBUTE, "main") in attrs for attrs in attribute_sets)
        own = {k for attrs in attribute_sets for k, _ in attrs} - {OTEL_POOL_ATTRIBUTE}
        if row.kind == "info":
            assert len(attribute_sets) == 1
        elif row.name == "sqlalchemy_pool_connections":
            assert own == {"db.client.connection.state"}
            assert len(attribute_sets) == 2
        else:
            assert own == set(row.labels)
            assert len(attribute_sets) == len(row.fields)


def test_replayed_histograms_are_exact_for_cumulative_and_delta_readers(
    make_engine: Callable[..., Engine],
) -> None:
    cumulative = InMemoryMetricReader()
    delta = InMemoryMetricReader(preferred_temporality={Histogram: AggregationTemporality.DELTA})
    provider = MeterProvider(metric_readers=[cumulative, delta])
    try:
        engine = make_engine(pool_size=2)
        sqlalchemy_pool_exporter.instrument(
            engine, name="main", registry=None, meter_provider=provider
        )
        counts = []
        for n in (10, 7, 0, 3):
            for _ in range(n):
                engine.raw_connection().close()
            first = sdk_points(cumulative.get_metrics_data())
            second = sdk_points(delta.get_metrics_data())
            waits = [
                {p.count for (n, _), p in points.items() if n == "db.client.connection.wait_time"}
                for points in (first, second)
            ]
            counts.append(tuple(waits))
        # Every observation replayed once, into both readers (nothing new: no delta point).
        assert counts == [({10}, {10}), ({17}, {7}), ({17}, set()), ({20}, {3})]
        data = stats_of("main").read(top=0).histograms["wait_seconds"]
        assert_histogram(named(first, "db.client.connection.wait_time", POOL), data, 20)
    finally:
        provider.shutdown()


def test_uninstrumented_and_other_pools_are_not_reported(
    make_engine: Callable[..., Engine], otel: Otel
) -> None:
    traced = make_engine()
    plain = make_engine()
    sqlalchemy_pool_exporter.instrument(
        traced, name="main", registry=None, meter_provider=otel.provider
    )
    sqlalchemy_pool_exporter.instrument(plain, name="plain", registry=None)
    pools = {dict(attrs)[OTEL_POOL_ATTRIBUTE] for (_, attrs) in otel.collect()}
    assert pools == {"main"}
    sqlalchemy_pool_exporter.uninstrument(traced)
    assert otel.collect() == {}


def test_meter_provider_alone_turns_otel_on_and_otel_false_keeps_it_off(
    make_engine: Callable[..., Engine], otel: Otel
) -> None:
    engine = make_engine()
    sqlalchemy_pool_exporter.instrument(
        engine, name="off", registry=None, otel=False, meter_provider=otel.provider
    )
    assert otel.collect() == {}


def test_a_burst_beyond_the_replay_budget_is_reported_late_never_lost(
    make_engine: Callable[..., Engine], otel: Otel, monkeypatch: pytest.MonkeyPatch
) -> None:
    # No time at all: each histogram replays up to its first look at the clock (256).
    monkeypatch.setattr(otel_bridge, "REPLAY_SECONDS", 0.0)
    engine = make_engine()
    sqlalchemy_pool_exporter.instrument(
        engine, name="main", registry=None, meter_provider=otel.provider
    )
    for _ in range(600):
        engine.raw_connection().close()
    counts = []
    for _ in range(4):
        points = otel.collect()
        counts.append(named(points, "db.client.connection.wait_time", POOL).count)
    assert counts == [256, 512, 600, 600]
    assert_histogram(
        named(points, "db.client.connection.wait_time", POOL),
        stats_of("main").read(top=0).histograms["wait_seconds"],
        600,
    )
