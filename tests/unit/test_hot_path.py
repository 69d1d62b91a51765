"""The hot path's shortcuts: bucket lookups, the forwarders it skips, other wrappers kept."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from sqlalchemy import Engine
from sqlalchemy.pool import SingletonThreadPool
from sqlalchemy.pool.base import _ConnectionFairy

import sqlalchemy_pool_exporter
from sqlalchemy_pool_exporter.instrumentation import acquire


def test_custom_buckets_count_waits_uses_and_connects_in_the_right_bucket(
    make_engine: Callable[..., Engine], registry: CollectorRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The hot path's clock, driven by the test: a loaded machine cannot move a hold
    # across a bucket bound.
    now = [1000.0]
    monkeypatch.setattr(acquire, "perf_counter", lambda: now[0])
    engine = make_engine(pool_size=1, max_overflow=0)
    sqlalchemy_pool_exporter.instrument(
        engine, name="b", registry=registry, buckets=[0.004, 0.05, 0.5]
    )
    for hold in (0.0, 0.01, 0.01, 0.1):
        conn = engine.raw_connection()
        now[0] += hold
        conn.close()

    def bucket(name: str, le: str) -> float | None:
        return registry.get_sample_value(f"sqlalchemy_pool_{name}_bucket", {"pool": "b", "le": le})

    # Held 0 s, 10 ms, 10 ms, 100 ms: one per bucket up to 0.004, three up to 0.05, ...
    assert [bucket("use_seconds", le) for le in ("0.004", "0.05", "0.5", "+Inf")] == [1, 3, 4, 4]
    assert bucket("wait_seconds", "0.004") == 4
    assert bucket("connect_seconds", "0.004") == 1


def parts_of(fn: Any, *names: str) -> dict[str, Any]:
    """What a wrapper calls: the compiled ones keep it as attributes, closures in cells."""
    if not hasattr(fn, "__closure__"):
        return {name: getattr(fn, name) for name in names}
    cells = (c.cell_contents for c in fn.__closure__)
    return dict(zip(fn.__code__.co_freevars, cells, strict=True))


def test_sqlalchemy_forwarders_are_recognised_so_the_short_path_is_taken(
    make_engine: Callable[..., Engine], registry: CollectorRegistry
) -> None:
    engine = make_engine()
    sqlalchemy_pool_exporter.instrument(engine, name="fwd", registry=registry)
    pool = engine.pool
    # Pool.connect and Pool._return_conn only forward: the wrappers call their targets
    # themselves, one frame less per checkout and per checkin, on SQLAlchemy 2.0 and 2.1.
    connect = parts_of(pool.__dict__["connect"], "checkout", "target")
    assert connect["checkout"] == _ConnectionFairy._checkout and connect["target"] is pool
    end = parts_of(pool.__dict__["_return_conn"], "forward")
    assert end["forward"] == type(pool)._do_return_conn.__get__(pool)
    assert getattr(pool.__dict__["_do_return_conn"], acquire._MARK) is not None
    sqlalchemy_pool_exporter.uninstrument(engine)
    assert not {"connect", "_return_conn", "_do_return_conn"} & set(pool.__dict__)


def test_a_pool_class_with_its_own_connect_keeps_it(
    make_engine: Callable[..., Engine], registry: CollectorRegistry
) -> None:
    engine = make_engine(poolclass=SingletonThreadPool)
    sqlalchemy_pool_exporter.instrument(engine, name="stp", registry=registry)
    connect = parts_of(engine.pool.__dict__["connect"], "checkout", "target")
    assert connect["checkout"] is SingletonThreadPool.connect and connect["target"] is engine.pool


def test_another_librarys_wrappers_keep_working_and_are_put_back(
    make_engine: Callable[..., Engine], registry: CollectorRegistry
) -> None:
    engine = make_engine()
    pool = engine.pool
    calls: list[str] = []
    their_connect, their_return = pool.connect, pool._do_return_conn

    def connect() -> Any:
        calls.append("connect")
        return their_connect()

    def do_return_conn(rec: Any) -> None:
        calls.append("return")
        their_return(rec)

    pool.connect = connect  # type: ignore[method-assign]
    pool._do_return_conn = do_return_conn  # type: ignore[method-assign]
    sqlalchemy_pool_exporter.instrument(engine, name="other", registry=registry)
    for _ in range(3):
        engine.raw_connection().close()
    assert calls == ["connect", "return"] * 3
    assert registry.get_sample_value("sqlalchemy_pool_checkouts_total", {"pool": "other"}) == 3
    sqlalchemy_pool_exporter.uninstrument(engine)
    assert pool.connect is connect and pool._do_return_conn is do_return_conn
    engine.raw_connection().close()
    assert calls[-2:] == ["connect", "return"]
