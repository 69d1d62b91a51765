"""Defined behaviour for every pool class, sync and async."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

from prometheus_client import CollectorRegistry, generate_latest
from sqlalchemy import Engine, text
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool, SingletonThreadPool, StaticPool

import sqlalchemy_pool_exporter


def series(registry: CollectorRegistry, pool: str) -> dict[str, float]:
    """Every sample of ``pool`` as {"name{labels}": value}, labels other than pool sorted."""
    out: dict[str, float] = {}
    for family in registry.collect():
        for s in family.samples:
            if s.labels.get("pool") != pool:
                continue
            rest = ",".join(f"{k}={v}" for k, v in sorted(s.labels.items()) if k != "pool")
            out[f"{s.name}{{{rest}}}" if rest else s.name] = s.value
    return out


def test_queue_pool_series(make_engine: Callable[..., Engine], registry: CollectorRegistry) -> None:
    engine = make_engine(
        pool_size=3, max_overflow=2, pool_timeout=7, pool_recycle=3600, pool_pre_ping=True
    )
    sqlalchemy_pool_exporter.instrument(engine, name="q", registry=registry)
    a, b, c, d = (engine.connect() for _ in range(4))
    d.close()
    s = series(registry, "q")
    assert s["sqlalchemy_pool_size"] == 3
    assert s["sqlalchemy_pool_max_overflow"] == 2
    assert s["sqlalchemy_pool_max_connections"] == 5
    assert s["sqlalchemy_pool_connections{state=checked_out}"] == 3
    assert s["sqlalchemy_pool_connections{state=idle}"] == 1
    assert s["sqlalchemy_pool_overflow"] == 1
    assert s["sqlalchemy_pool_utilization_ratio"] == 3 / 5
    assert s["sqlalchemy_pool_peak_utilization_ratio"] == 4 / 5
    info = [k for k in s if k.startswith("sqlalchemy_pool_info")]
    assert info == [
        "sqlalchemy_pool_info{database=" + engine.url.database + ",dialect=sqlite,driver=pysqlite,"
        "host=,pool_class=QueuePool,pre_ping=true,recycle_seconds=3600,timeout_seconds=7}"
    ]
    for conn in (a, b, c):
        conn.close()


def test_null_pool_has_no_limit_series(
    make_engine: Callable[..., Engine], registry: CollectorRegistry
) -> None:
    engine = make_engine(poolclass=NullPool)
    sqlalchemy_pool_exporter.instrument(engine, name="null", registry=registry)
    conns = [engine.connect() for _ in range(3)]
    s = series(registry, "null")
    for absent in (
        "sqlalchemy_pool_size",
        "sqlalchemy_pool_max_overflow",
        "sqlalchemy_pool_max_connections",
        "sqlalchemy_pool_utilization_ratio",
        "sqlalchemy_pool_peak_utilization_ratio",
    ):
        assert absent not in s
    assert s["sqlalchemy_pool_connections{state=checked_out}"] == 3
    assert s["sqlalchemy_pool_connections{state=idle}"] == 0
    for conn in conns:
        conn.close()
    s = series(registry, "null")
    assert s["sqlalchemy_pool_checkouts_total"] == 3
    assert s["sqlalchemy_pool_connections_created_total"] == 3
    assert s["sqlalchemy_pool_connections_closed_total"] == 3


def test_static_pool(make_engine: Callable[..., Engine], registry: CollectorRegistry) -> None:
    engine = make_engine("sqlite://", poolclass=StaticPool)
    sqlalchemy_pool_exporter.instrument(engine, name="static", registry=registry)
    with engine.connect() as conn:
        conn.execute(text("SELECT 1"))
        assert series(registry, "static")["sqlalchemy_pool_connections{state=checked_out}"] == 1
    s = series(registry, "static")
    assert s["sqlalchemy_pool_connections{state=idle}"] == 1
    assert s["sqlalchemy_pool_size"] == 1
    assert "sqlalchemy_pool_max_connections" not in s
    assert "sqlalchemy_pool_utilization_ratio" not in s
    assert s["sqlalchemy_pool_checkouts_total"] == 1


def test_singleton_thread_pool_counts_nested_checkout_once(
    make_engine: Callable[..., Engine], registry: CollectorRegistry
) -> None:
    engine = make_engine("sqlite://", poolclass=SingletonThreadPool, pool_size=4)
    sqlalchemy_pool_exporter.instrument(engine, name="single", registry=registry)
    outer = engine.raw_connection()
    inner = engine.raw_connection()  # the same thread's connection again
    s = series(registry, "single")
    assert s["sqlalchemy_pool_checkouts_total"] == 1
    assert s["sqlalchemy_pool_connections{state=checked_out}"] == 1
    inner.close()
    outer.close()
    s = series(registry, "single")
    assert s["sqlalchemy_pool_connections{state=checked_out}"] == 0
    assert s["sqlalchemy_pool_connections{state=idle}"] == 1
    assert s["sqlalchemy_pool_size"] == 4
    assert "sqlalchemy_pool_max_connections" not in s
    assert s["sqlalchemy_pool_use_seconds_count"] == 1


def test_unbounded_queue_pool(
    make_engine: Callable[..., Engine], registry: CollectorRegistry
) -> None:
    engine = make_engine(pool_size=2, max_overflow=-1)
    sqlalchemy_pool_exporter.instrument(engine, name="unbounded", registry=registry)
    s = series(registry, "unbounded")
    assert s["sqlalchemy_pool_max_overflow"] == -1
    assert "sqlalchemy_pool_max_connections" not in s
    assert "sqlalchemy_pool_utilization_ratio" not in s


def test_async_engine_counts_exactly(tmp_path: Path, registry: CollectorRegistry) -> None:
    engine = create_async_engine(
        f"sqlite+aiosqlite:///{tmp_path / 'a.db'}", pool_size=3, max_overflow=2
    )
    sqlalchemy_pool_exporter.instrument(engine, name="async", registry=registry)

    async def task() -> None:
        for _ in range(20):
            async with engine.connect() as conn:
                await conn.execute(text("SELECT 1"))

    async def main() -> None:
        await asyncio.gather(*(task() for _ in range(25)))
        await engine.dispose()

    try:
        asyncio.run(main())
        s = series(registry, "async")
        assert s["sqlalchemy_pool_checkouts_total"] == 500
        assert s["sqlalchemy_pool_use_seconds_count"] == 500
        assert s["sqlalchemy_pool_wait_seconds_count"] == 500
        assert s["sqlalchemy_pool_connections{state=checked_out}"] == 0
        assert s["sqlalchemy_pool_max_connections"] == 5
        assert any(
            k.startswith("sqlalchemy_pool_info{")
            and "pool_class=AsyncAdaptedQueuePool" in k
            and "driver=aiosqlite" in k
            for k in s
        )
        text_out = generate_latest(registry).decode()
        assert 'sqlalchemy_pool_checkouts_total{pool="async"} 500.0' in text_out
    finally:
        sqlalchemy_pool_exporter.uninstrument(engine)


def test_async_checkout_site_names_the_coroutine(
    tmp_path: Path, registry: CollectorRegistry
) -> None:
    engine = create_async_engine(f"sqlite+aiosqlite:///{tmp_path / 'a.db'}")
    stats = sqlalchemy_pool_exporter.instrument(engine, name="asite", registry=registry)

    async def handler() -> str:
        conn = await engine.connect()  # the site
        site = stats.read().held[0].site
        await conn.close()
        return site

    async def main() -> str:
        try:
            return await handler()
        finally:
            await engine.dispose()

    try:
        site = asyncio.run(main())
        assert site.startswith("tests/unit/test_pool_classes.py:")
        assert site.endswith(" in handler")
    finally:
        sqlalchemy_pool_exporter.uninstrument(engine)
