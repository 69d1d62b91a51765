"""A dropped engine's stats carry on in the next engine of the same name and options.

Apps replace engines: on a configuration reload, or (the anti-pattern of cause 10) one
for every request. Each replacement is the same pool to whoever reads the series, so its
counters must only grow, and what a short-lived engine counted must not be lost; and a
pool that opens a connection for every checkout must be diagnosed as such.
"""

from __future__ import annotations

import gc
from typing import Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from prometheus_client import CollectorRegistry
from sqlalchemy import Engine, create_engine, text

import sqlalchemy_pool_exporter
from sqlalchemy_pool_exporter.instrumentation import registry as instrumented
from tests.otel_points import sdk_points
from tests.unit.test_fork import in_child

CHECKOUTS = "sqlalchemy_pool_checkouts_total"
CREATED = "sqlalchemy_pool_connections_created_total"
WAIT_TIME = "db.client.connection.wait_time"


def used_engine(url: str, name: str, checkouts: int, **options: Any) -> Engine:
    """A new instrumented engine named ``name`` after ``checkouts`` checkouts."""
    engine = create_engine(url, pool_size=5)
    sqlalchemy_pool_exporter.instrument(engine, name=name, **options)
    for _ in range(checkouts):
        with engine.connect() as conn:
            conn.execute(text("select 1"))
    return engine


def drop(engine: Engine) -> None:
    """Let go of ``engine`` (the caller's last reference) as an app does: no dispose."""
    del engine
    gc.collect()  # engines sit in reference cycles: the cyclic collector frees them


def sample(registry: CollectorRegistry, name: str, pool: str) -> float | None:
    return registry.get_sample_value(name, {"pool": pool})


def test_an_engine_per_request_is_one_pool_counted_exactly_and_diagnosed(
    sqlite_url: str, registry: CollectorRegistry, engines: list[Engine]
) -> None:
    for _ in range(19):
        drop(used_engine(sqlite_url, "per-request", 1, registry=registry))
    engines.append(used_engine(sqlite_url, "per-request", 1, registry=registry))

    assert sample(registry, CHECKOUTS, "per-request") == 20
    assert sample(registry, "sqlalchemy_pool_use_seconds_count", "per-request") == 20
    assert sample(registry, CREATED, "per-request") == 20
    found = sqlalchemy_pool_exporter.diagnose(engines[0])
    assert [f.cause for f in found] == [10]
    assert found[0].summary == "20 connections opened for 20 checkouts: the pool is not reused"
    assert found[0].fix.startswith("create the engine once per process")


def test_a_replaced_engine_keeps_its_name_and_counts_on(
    sqlite_url: str, registry: CollectorRegistry, engines: list[Engine]
) -> None:
    drop(used_engine(sqlite_url, "shop", 5, registry=registry))
    engines.append(used_engine(sqlite_url, "shop", 3, registry=registry))
    assert [i.stats.name for i in sqlalchemy_pool_exporter.instrumentations()] == ["shop"]
    assert sample(registry, CHECKOUTS, "shop") == 8
    assert sample(registry, CREATED, "shop") == 2  # one connection per engine
    assert sample(registry, "sqlalchemy_pool_connections", "shop") is None  # has a state label
    assert (
        registry.get_sample_value(
            "sqlalchemy_pool_connections", {"pool": "shop", "state": "checked_out"}
        )
        == 0
    )


def test_other_options_or_a_live_namesake_start_from_zero(
    sqlite_url: str, registry: CollectorRegistry, engines: list[Engine]
) -> None:
    drop(used_engine(sqlite_url, "reload", 4, registry=registry, leak_threshold=30))
    engines.append(used_engine(sqlite_url, "reload", 1, registry=registry, leak_threshold=5))
    assert sample(registry, CHECKOUTS, "reload") == 1
    # While that engine lives, another one of the name is another pool.
    engines.append(used_engine(sqlite_url, "reload", 2, registry=registry, leak_threshold=5))
    assert sample(registry, CHECKOUTS, "reload#2") == 2
    assert sample(registry, CHECKOUTS, "reload") == 1


def test_retired_stats_let_go_of_every_connection_record(
    sqlite_url: str, registry: CollectorRegistry, engines: list[Engine]
) -> None:
    # SQLAlchemy's pool refers to its engine (the first-connect listener), so an engine is
    # not freed while a connection of its pool is out; retiring still lets go of every
    # record, so that a name waiting for a successor never keeps a connection alive.
    engine = used_engine(sqlite_url, "held", 1, registry=registry)
    engines.append(engine)
    stats = instrumented.lookup(engine).stats  # type: ignore[union-attr]
    still_out = engine.raw_connection()
    assert len(stats.held) == 1
    stats.release_connections()
    assert len(stats.held) == 0 and len(stats.leaked) == 0
    still_out.close()  # nothing left to book for it, and nothing goes wrong
    assert sample(registry, CHECKOUTS, "held") == 2
    assert sample(registry, "sqlalchemy_pool_use_seconds_count", "held") == 1
    assert registry.get_sample_value("pool_exporter_errors_total", {"where": "checkin"}) is None


def test_only_the_latest_dropped_names_wait_for_a_successor(
    sqlite_url: str,
    registry: CollectorRegistry,
    engines: list[Engine],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(instrumented, "RETIRED_MAX", 3)
    for name in ("a", "b", "c", "d"):
        drop(used_engine(sqlite_url, name, 2, registry=registry))
    engines.append(used_engine(sqlite_url, "a", 1, registry=registry))  # the oldest: gone
    engines.append(used_engine(sqlite_url, "d", 1, registry=registry))
    assert sample(registry, CHECKOUTS, "a") == 1
    assert sample(registry, CHECKOUTS, "d") == 3


def test_a_forked_child_carries_on_none_of_its_parents_dropped_engines(
    sqlite_url: str, registry: CollectorRegistry, engines: list[Engine]
) -> None:
    drop(used_engine(sqlite_url, "parent", 4, registry=registry))

    def child() -> dict[str, Any]:
        engine = used_engine(sqlite_url, "parent", 1, registry=None)
        return {"checkouts": instrumented.lookup(engine).stats.checkouts}  # type: ignore[union-attr]

    assert in_child(child)["checkouts"] == 1
    engines.append(used_engine(sqlite_url, "parent", 1, registry=registry))
    assert sample(registry, CHECKOUTS, "parent") == 5  # the parent's own carry on


def test_opentelemetry_histograms_go_on_from_where_they_were(
    sqlite_url: str, engines: list[Engine]
) -> None:
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    try:

        def waits() -> set[int | None]:
            points = sdk_points(reader.get_metrics_data())
            return {
                p.count for (n, _), p in points.items() if n == "db.client.connection.wait_time"
            }

        options = {"registry": None, "meter_provider": provider}
        drop(used_engine(sqlite_url, "otel", 3, **options))
        engines.append(used_engine(sqlite_url, "otel", 0, **options))
        assert waits() == {3}
        with engines[0].connect():
            pass
        assert waits() == {4}  # each wait replayed once, never again from the start
    finally:
        provider.shutdown()
