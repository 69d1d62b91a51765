"""Scenario 1: the pool limit is reached under concurrent load.

``pool_size=2, max_overflow=1`` (limit 3), ``pool_timeout=1.5``. Three callers take every
connection and hold it; four more ask and wait. The user must see: utilization 1, four
callers pending while they wait, then four timeouts counted, the four timed-out waits in
the wait histogram (above the 1.5 s timeout, apart from the three fast checkouts), and
pending back to 0. When the holders return, the overflow connection is closed (the pool
keeps ``pool_size`` idle).
"""

from __future__ import annotations

import asyncio
import threading

from sqlalchemy import exc as sa_exc
from sqlalchemy import text

import sqlalchemy_pool_exporter
from tests.integration.pgcluster import PgCluster, wait_for
from tests.integration.postgres.helpers import (
    PoolMetrics,
    async_engine,
    expected_counters,
    sync_engine,
    until,
)

POOL = {"pool_size": 2, "max_overflow": 1, "pool_timeout": 1.5}
HOLDERS, WAITERS = 3, 4


def check_while_full(metrics: PoolMetrics) -> None:
    assert metrics.gauge("checked_out") == HOLDERS
    assert metrics.gauge("max_connections") == 3
    assert metrics.gauge("overflow") == 1
    assert metrics.gauge("utilization_ratio") == 1.0
    assert metrics.gauge("peak_utilization_ratio") == 1.0


def check_after_timeouts(metrics: PoolMetrics, errors: list[BaseException]) -> None:
    assert [type(e) for e in errors] == [sa_exc.TimeoutError] * WAITERS
    assert metrics.gauge("pending") == 0
    assert metrics.gauge("checked_out") == HOLDERS
    assert metrics.counters() == expected_counters(
        checkouts=HOLDERS, checkout_timeouts=WAITERS, connections_created=HOLDERS
    )
    wait = metrics.histogram("wait_seconds")
    # 3 successful waits (fast: opening a connection) + 4 timed-out ones (just over 1.5 s).
    assert wait["count"] == HOLDERS + WAITERS
    assert wait["0.5"] == wait["1.0"] == HOLDERS
    assert wait["2.5"] == HOLDERS + WAITERS
    assert wait["sum"] >= WAITERS * POOL["pool_timeout"]


def check_after_release(metrics: PoolMetrics) -> None:
    assert metrics.gauge("checked_out") == 0
    assert metrics.gauge("idle") == 2
    assert metrics.gauge("overflow") == 0
    assert metrics.counters() == expected_counters(
        checkouts=HOLDERS,
        checkout_timeouts=WAITERS,
        connections_created=HOLDERS,
        connections_closed=1,
    )
    assert metrics.histogram("use_seconds")["count"] == HOLDERS


def test_exhaustion_sync(pg: PgCluster) -> None:
    name = "exhaustion-psycopg2"
    engine = sync_engine(pg, name, **POOL)
    metrics = PoolMetrics(engine, name)
    release = threading.Event()
    errors: list[BaseException] = []

    def hold() -> None:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
            release.wait(30)

    def ask() -> None:
        try:
            with engine.connect():
                pass
        except Exception as exc:
            errors.append(exc)

    holders = [threading.Thread(target=hold) for _ in range(HOLDERS)]
    waiters = [threading.Thread(target=ask) for _ in range(WAITERS)]
    try:
        for t in holders:
            t.start()
        wait_for(lambda: metrics.gauge("checked_out") == HOLDERS)
        check_while_full(metrics)
        for t in waiters:
            t.start()
        wait_for(lambda: metrics.gauge("pending") == WAITERS, timeout=1.4)
        for t in waiters:
            t.join(10)
        check_after_timeouts(metrics, errors)
    finally:
        release.set()
        for t in holders:
            t.join(10)
        check_after_release(metrics)
        sqlalchemy_pool_exporter.uninstrument(engine)
        engine.dispose()


def test_exhaustion_asyncpg(pg: PgCluster) -> None:
    name = "exhaustion-asyncpg"

    async def main() -> None:
        engine = async_engine(pg, name, **POOL)
        metrics = PoolMetrics(engine, name)
        release = asyncio.Event()
        errors: list[BaseException] = []

        async def hold() -> None:
            async with engine.connect() as conn:
                await conn.execute(text("SELECT 1"))
                await release.wait()

        async def ask() -> None:
            try:
                async with engine.connect():
                    pass
            except Exception as exc:
                errors.append(exc)

        holders = [asyncio.create_task(hold()) for _ in range(HOLDERS)]
        try:
            await until(lambda: metrics.gauge("checked_out") == HOLDERS)
            check_while_full(metrics)
            waiters = [asyncio.create_task(ask()) for _ in range(WAITERS)]
            await until(lambda: metrics.gauge("pending") == WAITERS, timeout=1.4)
            await asyncio.gather(*waiters)
            check_after_timeouts(metrics, errors)
        finally:
            release.set()
            await asyncio.gather(*holders)
            check_after_release(metrics)
            sqlalchemy_pool_exporter.uninstrument(engine)
            await engine.dispose()

    asyncio.run(main())
