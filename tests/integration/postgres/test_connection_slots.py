"""Scenario 4: the server runs out of connection slots before the pools reach their limits.

The server accepts ``max_connections - superuser_reserved_connections`` = 20 - 3 = 17
ordinary sessions. The probe holds one; two pools of the same app may open 10 each
(``pool_size=5, max_overflow=5``): together 20, more than the server will ever accept.

Pool A takes its 10; pool B gets 6 (10 + 6 + the probe = 17) and its next three attempts
are refused by the server ("remaining connection slots are reserved"). The user sees:

* ``connect_errors_total`` = 3 on B, 0 on A; B's overflow is not left inflated by the
  failed opens, and nothing is left pending;
* from the probe, the budget the dashboard/alert compares: the pools' combined
  ``sqlalchemy_pool_max_connections`` (20) exceeds ``db_max_connections -
  db_reserved_connections`` (17), and the server has exactly 16 app sessions (all
  ``idle in transaction``: each ran a query in SQLAlchemy's implicit transaction).
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from sqlalchemy import text

import sqlalchemy_pool_exporter
from sqlalchemy_pool_exporter.probes.postgres import DatabaseProbe
from tests.integration.pgcluster import PgCluster, wait_for
from tests.integration.postgres.helpers import (
    PoolMetrics,
    async_engine,
    expected_counters,
    sync_engine,
)

POOL = {"pool_size": 5, "max_overflow": 5, "pool_timeout": 2}
FULL = "remaining connection slots are reserved"
DB = {"database": "postgres"}


def sample_sum(registry: CollectorRegistry, name: str, **labels: str) -> float:
    return sum(
        s.value
        for f in registry.collect()
        for s in f.samples
        if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
    )


class Budget:
    """Two pools of one app and the probe, all rendered by one registry."""

    def __init__(self, pg: PgCluster, driver: str, engines: list[Any]) -> None:
        self.names = [f"slots-{driver}-a", f"slots-{driver}-b"]
        self.a = PoolMetrics(engines[0], self.names[0])
        self.registry = self.a.registry
        self.b = PoolMetrics(engines[1], self.names[1], registry=self.registry)
        self.probe = DatabaseProbe(pg.url(user="monitor"))
        self.registry.register(self.probe)
        # Start from an empty server: only the probe's own session (not counted by it).
        wait_for(lambda: self.probe.probe_once() and self.db_sessions() == 0)

    def db_sessions(self) -> float:
        return sample_sum(self.registry, "sqlalchemy_pool_db_connections", **DB)

    def check(self, errors: list[BaseException]) -> None:
        assert len(errors) == 3
        assert all(FULL in str(e) for e in errors), errors
        assert self.a.counters() == expected_counters(checkouts=10, connections_created=10)
        assert self.b.counters() == expected_counters(
            checkouts=6, connections_created=6, connect_errors=3
        )
        assert self.b.gauge("checked_out") == 6
        assert self.b.gauge("overflow") == 1
        assert self.b.gauge("pending") == 0
        assert self.probe.probe_once()
        reg = self.registry
        # Every held connection ran a query in SQLAlchemy's implicit transaction.
        states = {
            s.labels["state"]: s.value
            for f in reg.collect()
            for s in f.samples
            if s.name == "sqlalchemy_pool_db_connections"
        }
        assert states == {
            "active": 0,
            "idle": 0,
            "idle in transaction": 16,
            "idle in transaction (aborted)": 0,
        }
        limits = sum(sample_sum(reg, "sqlalchemy_pool_max_connections", pool=n) for n in self.names)
        max_conn = reg.get_sample_value("sqlalchemy_pool_db_max_connections", DB)
        reserved = reg.get_sample_value("sqlalchemy_pool_db_reserved_connections", DB)
        assert (limits, max_conn, reserved) == (20, 20, 3)
        assert limits > max_conn - reserved

    def close(self, engines: list[Any]) -> None:
        self.probe.stop()
        for engine in engines:
            sqlalchemy_pool_exporter.uninstrument(engine)


def test_out_of_slots_sync(pg: PgCluster) -> None:
    engines = [sync_engine(pg, f"slots-psycopg2-{x}", **POOL) for x in "ab"]
    budget = Budget(pg, "psycopg2", engines)
    errors: list[BaseException] = []
    try:
        with contextlib.ExitStack() as held:
            for _ in range(10):
                held.enter_context(engines[0].connect()).execute(text("SELECT 1"))
            for _ in range(6):
                held.enter_context(engines[1].connect()).execute(text("SELECT 1"))
            for _ in range(3):
                with pytest.raises(Exception) as info:
                    held.enter_context(engines[1].connect())
                errors.append(info.value)
            budget.check(errors)
    finally:
        budget.close(engines)
        for engine in engines:
            engine.dispose()


def test_out_of_slots_asyncpg(pg: PgCluster) -> None:
    async def main() -> None:
        engines = [async_engine(pg, f"slots-asyncpg-{x}", **POOL) for x in "ab"]
        budget = Budget(pg, "asyncpg", engines)
        errors: list[BaseException] = []
        try:
            async with contextlib.AsyncExitStack() as held:
                for count, engine in ((10, engines[0]), (6, engines[1])):
                    for _ in range(count):
                        conn = await held.enter_async_context(engine.connect())
                        await conn.execute(text("SELECT 1"))
                for _ in range(3):
                    with pytest.raises(Exception) as info:
                        await held.enter_async_context(engines[1].connect())
                    errors.append(info.value)
                budget.check(errors)
        finally:
            budget.close(engines)
            for engine in engines:
                await engine.dispose()

    asyncio.run(main())
