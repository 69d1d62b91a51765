"""Scenario 2: the server kills pooled idle connections (pg_terminate_backend).

What a firewall, an idle timeout or a DBA does to a pool. Three connections sit idle in
the pool when their backends are killed; the app then runs four queries in a row.

SQLAlchemy's reaction, which the counters must show exactly:

* the first checkout finds a dead connection — with ``pool_pre_ping`` the ping fails,
  without it the app's query fails. Either way that connection is invalidated (one
  ``hard`` invalidation, one close) and the *whole pool* is marked stale;
* the two other pooled connections are then recycled at their next checkout (closed and
  reopened, no invalidation event), and the first one reconnects at its next checkout.

So: 7 checkouts, 3 + 3 connections created, 3 closed, 1 hard invalidation; the app sees
no error with pre-ping (the invalidation's ``cause="pre_ping"``) and exactly one — the
same one it would get without the exporter — without it (``cause="error"``).
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import pytest
from sqlalchemy import text

import sqlalchemy_pool_exporter
from tests.integration.pgcluster import PgCluster
from tests.integration.postgres.helpers import (
    PoolMetrics,
    async_engine,
    expected_counters,
    sync_engine,
)

CHURN = {"checkouts": 7, "connections_created": 6, "connections_closed": 3}
EXPECTED_PRE_PING = expected_counters(**CHURN, invalidations_hard_pre_ping=1)
EXPECTED_ERROR = expected_counters(**CHURN, invalidations_hard_error=1)


def describe(exc: BaseException) -> tuple[Any, ...]:
    """What the app handles an error by: its type, the driver's type, the disconnect flag."""
    # (The driver's text varies with timing — whether the server's FATAL message was read
    # before the socket error — so it is not compared.)
    return (
        type(exc),
        type(getattr(exc, "orig", None)),
        getattr(exc, "connection_invalidated", None),
    )


def run_sync(
    pg: PgCluster, name: str, pre_ping: bool, instrumented: bool
) -> tuple[list[tuple[Any, ...]], dict[str, int] | None]:
    engine = sync_engine(pg, name, pool_size=3, max_overflow=0, pool_pre_ping=pre_ping)
    metrics = PoolMetrics(engine, name) if instrumented else None
    errors: list[tuple[Any, ...]] = []
    try:
        with contextlib.ExitStack() as held:  # three connections at once: three in the pool
            for _ in range(3):
                held.enter_context(engine.connect()).execute(text("SELECT 1"))
        assert pg.terminate_backends(name) == 3
        for _ in range(4):
            try:
                with engine.connect() as conn:
                    assert conn.execute(text("SELECT 1")).scalar() == 1
            except Exception as exc:
                errors.append(describe(exc))
        assert len(pg.backends(name)) == 3  # the pool is whole again
        if metrics is None:
            return errors, None
        assert metrics.gauge("idle") == 3 and metrics.gauge("checked_out") == 0
        return errors, metrics.counters()
    finally:
        sqlalchemy_pool_exporter.uninstrument(engine)
        engine.dispose()


async def run_async(
    pg: PgCluster, name: str, pre_ping: bool, instrumented: bool
) -> tuple[list[tuple[Any, ...]], dict[str, int] | None]:
    engine = async_engine(pg, name, pool_size=3, max_overflow=0, pool_pre_ping=pre_ping)
    metrics = PoolMetrics(engine, name) if instrumented else None
    errors: list[tuple[Any, ...]] = []
    try:
        async with contextlib.AsyncExitStack() as held:
            for _ in range(3):
                conn = await held.enter_async_context(engine.connect())
                await conn.execute(text("SELECT 1"))
        assert pg.terminate_backends(name) == 3
        for _ in range(4):
            try:
                async with engine.connect() as conn:
                    assert (await conn.execute(text("SELECT 1"))).scalar() == 1
            except Exception as exc:
                errors.append(describe(exc))
        assert len(pg.backends(name)) == 3
        if metrics is None:
            return errors, None
        assert metrics.gauge("idle") == 3 and metrics.gauge("checked_out") == 0
        return errors, metrics.counters()
    finally:
        sqlalchemy_pool_exporter.uninstrument(engine)
        await engine.dispose()


@pytest.mark.parametrize("driver", ["psycopg2", "asyncpg"])
def test_pre_ping_hides_killed_backends_and_counts_the_invalidation(
    pg: PgCluster, driver: str
) -> None:
    name = f"killed-pre-ping-{driver}"
    if driver == "psycopg2":
        errors, counters = run_sync(pg, name, pre_ping=True, instrumented=True)
    else:
        errors, counters = asyncio.run(run_async(pg, name, pre_ping=True, instrumented=True))
    assert errors == []
    assert counters == EXPECTED_PRE_PING


@pytest.mark.parametrize("driver", ["psycopg2", "asyncpg"])
def test_without_pre_ping_the_app_gets_its_usual_error_and_it_is_counted(
    pg: PgCluster, driver: str
) -> None:
    name = f"killed-no-ping-{driver}"
    if driver == "psycopg2":
        control, _ = run_sync(pg, name + "-control", pre_ping=False, instrumented=False)
        errors, counters = run_sync(pg, name, pre_ping=False, instrumented=True)
    else:
        control, _ = asyncio.run(run_async(pg, name + "-control", False, instrumented=False))
        errors, counters = asyncio.run(run_async(pg, name, False, instrumented=True))
    # Exactly one error, identical to what the same app sees without the exporter.
    assert len(control) == 1
    assert control[0][2] is True  # SQLAlchemy recognised the disconnect
    assert errors == control
    assert counters == EXPECTED_ERROR
