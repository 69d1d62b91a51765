"""Scenario 6: ``pool_recycle`` replaces connections older than the limit.

Two connections are opened at once and returned; after ``pool_recycle`` (1 s) has
passed, two concurrent checkouts find both too old. Each is closed and reopened at
checkout: 2 closed, 2 more created, no invalidation — and on the server the old
backends are gone and two new ones stand in their place.
"""

from __future__ import annotations

import asyncio
import contextlib
import time

from sqlalchemy import text

import sqlalchemy_pool_exporter
from tests.integration.pgcluster import PgCluster, wait_for
from tests.integration.postgres.helpers import (
    PoolMetrics,
    async_engine,
    expected_counters,
    sync_engine,
)

POOL = {"pool_size": 2, "max_overflow": 0, "pool_recycle": 1}
AFTER_FIRST = expected_counters(checkouts=2, connections_created=2)
AFTER_RECYCLE = expected_counters(checkouts=4, connections_created=4, connections_closed=2)


def pids(pg: PgCluster, name: str) -> set[int]:
    return {pid for pid, _, _ in pg.backends(name)}


def check_recycled(pg: PgCluster, name: str, before: set[int], metrics: PoolMetrics) -> None:
    assert metrics.counters() == AFTER_RECYCLE
    assert metrics.gauge("idle") == 2 and metrics.gauge("checked_out") == 0
    # The server agrees: two new backends, the old ones gone (their exit is asynchronous).
    after = wait_for(lambda: (found := pids(pg, name)) and len(found) == 2 and found)
    assert not after & before


def test_pool_recycle_sync(pg: PgCluster) -> None:
    name = "recycle-psycopg2"
    engine = sync_engine(pg, name, **POOL)
    metrics = PoolMetrics(engine, name)
    try:
        for round_ in range(2):
            with contextlib.ExitStack() as held:
                for _ in range(2):
                    held.enter_context(engine.connect()).execute(text("SELECT 1"))
            if round_ == 0:
                assert metrics.counters() == AFTER_FIRST
                before = pids(pg, name)
                assert len(before) == 2
                time.sleep(POOL["pool_recycle"] + 0.2)
        check_recycled(pg, name, before, metrics)
    finally:
        sqlalchemy_pool_exporter.uninstrument(engine)
        engine.dispose()


def test_pool_recycle_asyncpg(pg: PgCluster) -> None:
    name = "recycle-asyncpg"

    async def main() -> None:
        engine = async_engine(pg, name, **POOL)
        metrics = PoolMetrics(engine, name)
        try:
            for round_ in range(2):
                async with contextlib.AsyncExitStack() as held:
                    for _ in range(2):
                        conn = await held.enter_async_context(engine.connect())
                        await conn.execute(text("SELECT 1"))
                if round_ == 0:
                    assert metrics.counters() == AFTER_FIRST
                    before = pids(pg, name)
                    assert len(before) == 2
                    await asyncio.sleep(POOL["pool_recycle"] + 0.2)
            check_recycled(pg, name, before, metrics)
        finally:
            sqlalchemy_pool_exporter.uninstrument(engine)
            await engine.dispose()

    asyncio.run(main())
