"""Exact counts from real SQLite engines: checkouts, waits, timeouts, pending, dispose."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import pytest
from prometheus_client import CollectorRegistry
from sqlalchemy import Engine, exc, text

import sqlalchemy_pool_exporter
from sqlalchemy_pool_exporter.instrumentation import acquire


def value(registry: CollectorRegistry, name: str, pool: str, **labels: str) -> float | None:
    """One sample of ``name`` for ``pool`` from the registry."""
    return registry.get_sample_value(name, {"pool": pool, **labels})


def test_16_threads_x_1000_checkouts_are_counted_exactly(
    make_engine: Callable[..., Engine], registry: CollectorRegistry
) -> None:
    engine = make_engine(pool_size=5, max_overflow=10, pool_timeout=30)
    sqlalchemy_pool_exporter.instrument(engine, name="exact", registry=registry)
    barrier = threading.Barrier(16)

    def work(i: int) -> None:
        barrier.wait()
        for n in range(1000):
            if (i + n) % 2:
                engine.raw_connection().close()
            else:
                with engine.connect() as conn:
                    conn.exec_driver_sql("SELECT 1")

    threads = [threading.Thread(target=work, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    assert value(registry, "sqlalchemy_pool_checkouts_total", "exact") == 16000
    assert value(registry, "sqlalchemy_pool_wait_seconds_count", "exact") == 16000
    assert value(registry, "sqlalchemy_pool_use_seconds_count", "exact") == 16000
    assert value(registry, "sqlalchemy_pool_wait_seconds_bucket", "exact", le="+Inf") == 16000
    assert value(registry, "sqlalchemy_pool_connections", "exact", state="checked_out") == 0
    assert value(registry, "sqlalchemy_pool_pending", "exact") == 0
    assert value(registry, "sqlalchemy_pool_checkout_timeouts_total", "exact") == 0
    created = value(registry, "sqlalchemy_pool_connections_created_total", "exact")
    closed = value(registry, "sqlalchemy_pool_connections_closed_total", "exact")
    assert created is not None and closed is not None
    # Overflow connections returned to a full pool are closed and may be reopened later;
    # whatever is open at the end sits idle in the pool.
    assert value(registry, "sqlalchemy_pool_connections", "exact", state="idle") == created - closed
    assert 1 <= created - closed <= 15
    assert value(registry, "sqlalchemy_pool_connect_seconds_count", "exact") == created


def test_timeouts_pending_and_wait_when_the_pool_runs_dry(
    make_engine: Callable[..., Engine], registry: CollectorRegistry
) -> None:
    engine = make_engine(pool_size=2, max_overflow=0, pool_timeout=1)
    sqlalchemy_pool_exporter.instrument(engine, name="dry", registry=registry)
    # Open both connections up front: the waits below are pure queue waits.
    with engine.connect(), engine.connect():
        pass
    barrier = threading.Barrier(4)
    errors: list[BaseException] = []

    def hold() -> None:
        barrier.wait()
        try:
            with engine.connect():
                time.sleep(2)
        except exc.TimeoutError as e:
            errors.append(e)

    threads = [threading.Thread(target=hold) for _ in range(4)]
    for t in threads:
        t.start()
    # Two callers hold the connections for 2 s; the other two wait (1 s) and time out.
    pending_seen = [value(registry, "sqlalchemy_pool_pending", "dry")]
    deadline = time.monotonic() + 1.5
    while pending_seen[-1] != 2 and time.monotonic() < deadline:
        time.sleep(0.005)
        pending_seen.append(value(registry, "sqlalchemy_pool_pending", "dry"))
    for t in threads:
        t.join()

    assert len(errors) == 2
    # The app gets SQLAlchemy's own exception, message and all.
    assert all(type(e) is exc.TimeoutError for e in errors)
    assert all("QueuePool limit of size 2 overflow 0 reached" in str(e) for e in errors)
    assert max(pending_seen) == 2
    assert value(registry, "sqlalchemy_pool_pending", "dry") == 0
    assert value(registry, "sqlalchemy_pool_checkout_timeouts_total", "dry") == 2
    # 2 warm-up + 2 successful checkouts; the 2 timed-out waits are observed too.
    assert value(registry, "sqlalchemy_pool_checkouts_total", "dry") == 4
    assert value(registry, "sqlalchemy_pool_wait_seconds_count", "dry") == 6
    assert value(registry, "sqlalchemy_pool_wait_seconds_bucket", "dry", le="0.5") == 4
    assert value(registry, "sqlalchemy_pool_wait_seconds_bucket", "dry", le="1.0") == 4
    assert value(registry, "sqlalchemy_pool_wait_seconds_bucket", "dry", le="2.5") == 6
    total = value(registry, "sqlalchemy_pool_wait_seconds_sum", "dry")
    assert total is not None and 1.95 <= total <= 2.6  # two waits of ~1 s each
    assert value(registry, "sqlalchemy_pool_connections", "dry", state="checked_out") == 0
    assert value(registry, "sqlalchemy_pool_connections", "dry", state="idle") == 2
    assert value(registry, "sqlalchemy_pool_peak_utilization_ratio", "dry") == 1.0


def test_dispose_and_recreate_keep_counting(
    make_engine: Callable[..., Engine], registry: CollectorRegistry
) -> None:
    engine = make_engine(pool_size=3, max_overflow=1)
    sqlalchemy_pool_exporter.instrument(engine, name="disposed", registry=registry)
    for _ in range(5):
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    spare = engine.connect()
    held = engine.connect()  # a second connection, checked out across the dispose
    spare.close()  # idle in the old pool: dispose() closes it
    old_pool = engine.pool
    engine.dispose()
    assert engine.pool is not old_pool
    for _ in range(7):
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    assert value(registry, "sqlalchemy_pool_connections", "disposed", state="checked_out") == 1
    held.close()

    assert value(registry, "sqlalchemy_pool_checkouts_total", "disposed") == 14
    assert value(registry, "sqlalchemy_pool_use_seconds_count", "disposed") == 14
    assert value(registry, "sqlalchemy_pool_connections", "disposed", state="checked_out") == 0
    # Two connections before the dispose, one after; dispose closed the idle one only.
    assert value(registry, "sqlalchemy_pool_connections_created_total", "disposed") == 3
    assert value(registry, "sqlalchemy_pool_connections_closed_total", "disposed") == 1
    assert value(registry, "sqlalchemy_pool_max_connections", "disposed") == 4


def test_instrument_is_idempotent_and_reversible(
    make_engine: Callable[..., Engine], registry: CollectorRegistry
) -> None:
    engine = make_engine()
    first = sqlalchemy_pool_exporter.instrument(engine, name="once", registry=registry)
    assert sqlalchemy_pool_exporter.instrument(engine, name="once", registry=registry) is first
    for _ in range(3):
        engine.raw_connection().close()
    assert value(registry, "sqlalchemy_pool_checkouts_total", "once") == 3

    assert sqlalchemy_pool_exporter.uninstrument(engine) is True
    assert sqlalchemy_pool_exporter.uninstrument(engine) is False
    assert "connect" not in engine.pool.__dict__
    engine.raw_connection().close()
    assert first.checkouts == 3
    assert value(registry, "sqlalchemy_pool_checkouts_total", "once") is None

    again = sqlalchemy_pool_exporter.instrument(engine, name="once", registry=registry)
    engine.raw_connection().close()
    assert again is not first
    assert value(registry, "sqlalchemy_pool_checkouts_total", "once") == 1


def test_same_url_twice_gets_distinct_names(
    make_engine: Callable[..., Engine], registry: CollectorRegistry, sqlite_url: str
) -> None:
    a = sqlalchemy_pool_exporter.instrument(make_engine(), registry=registry)
    b = sqlalchemy_pool_exporter.instrument(make_engine(), registry=registry)
    assert a.name == sqlite_url
    assert b.name == sqlite_url + "#2"


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (
            "postgresql+psycopg2://alice:s3cret@db.internal:6432/shop",
            "postgresql://db.internal:6432/shop",
        ),
        ("mysql+pymysql://root:hunter2@127.0.0.1/app?charset=utf8", "mysql://127.0.0.1/app"),
        ("sqlite://", "sqlite://"),
    ],
)
def test_default_name_never_carries_credentials(url: str, expected: str) -> None:
    from sqlalchemy import create_engine

    from sqlalchemy_pool_exporter.instrumentation.poolstate import default_name, read_info

    engine = create_engine(url, module=None) if url.startswith("sqlite") else _lazy_engine(url)
    assert default_name(engine) == expected
    info = read_info(engine)
    assert "s3cret" not in repr(info) and "alice" not in repr(info) and "hunter2" not in repr(info)


def _lazy_engine(url: str) -> Engine:
    # An engine for a URL whose driver may not be installed: never connects.
    from sqlalchemy import create_engine
    from sqlalchemy.engine import make_url

    dialect = make_url(url).get_dialect()
    module = type("FakeDBAPI", (), {"paramstyle": "pyformat", "Error": Exception})
    return create_engine(url, module=module) if dialect else create_engine(url)


def test_instrumenting_keeps_connections_off_the_event_dispatch_path(
    make_engine: Callable[..., Engine], registry: CollectorRegistry
) -> None:
    # Any engine-level (ConnectionEvents) listener makes every Connection dispatch events.
    engine = make_engine()
    sqlalchemy_pool_exporter.instrument(engine, name="fast", registry=registry)
    engine.dispose()
    assert engine._has_events is False
    engine.raw_connection().close()
    assert value(registry, "sqlalchemy_pool_checkouts_total", "fast") == 1


def test_waiters_that_started_at_the_same_instant_are_each_counted(
    make_engine: Callable[..., Engine],
    registry: CollectorRegistry,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A coarse clock (100 ns on some platforms) can give two waiters the same start
    # time: pending and the oldest wait must still count each of them exactly once.
    engine = make_engine(pool_size=1, max_overflow=0, pool_timeout=30)
    frozen = time.perf_counter()
    monkeypatch.setattr(acquire, "perf_counter", lambda: frozen)  # the wrappers' clock
    sqlalchemy_pool_exporter.instrument(engine, name="same", registry=registry)
    holder = engine.connect()
    got: list[int] = []

    def wait() -> None:
        with engine.connect():
            got.append(1)

    waiters = [threading.Thread(target=wait) for _ in range(2)]
    for t in waiters:
        t.start()
    deadline = time.monotonic() + 10
    while value(registry, "sqlalchemy_pool_pending", "same") != 2:
        assert time.monotonic() < deadline, "both waiters never showed as pending"
        time.sleep(0.005)
    oldest = value(registry, "sqlalchemy_pool_oldest_wait_seconds", "same")
    assert oldest is not None and oldest > 0
    holder.close()
    for t in waiters:
        t.join(10)
    assert got == [1, 1]
    assert value(registry, "sqlalchemy_pool_pending", "same") == 0
    assert value(registry, "sqlalchemy_pool_oldest_wait_seconds", "same") == 0
    assert value(registry, "sqlalchemy_pool_checkouts_total", "same") == 3
    # Served once an error happens (see test_robustness): none did here.
    assert registry.get_sample_value("pool_exporter_errors_total", {"where": "checkout"}) is None
