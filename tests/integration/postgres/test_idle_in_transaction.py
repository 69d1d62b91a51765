"""Scenario 5: a session left ``idle in transaction`` by the app.

The app checks out a connection, runs one query (SQLAlchemy begins a transaction) and
then forgets about it. Both sides must tell the story:

* the server (probe): one backend ``idle in transaction`` whose transaction age grows
  in step with the clock;
* the pool: the checkout's age (``oldest_checkout_seconds``) grows too and is at least
  the transaction's age; past the leak threshold (0.5 s here) the connection is counted
  once in ``leaks_total``, shown in ``leaked_connections`` and logged once — with the
  file and line of the ``connect()`` call that took it.

When the app finally closes it, every signal returns to 0 (``leaks_total`` stays 1).
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from sqlalchemy import text

import sqlalchemy_pool_exporter
from sqlalchemy_pool_exporter.probes.postgres import DatabaseProbe
from tests.integration.pgcluster import PgCluster, wait_for
from tests.integration.postgres.helpers import PoolMetrics, async_engine, sync_engine

LEAK_THRESHOLD = 0.5
IDLE_TX = {"database": "postgres", "state": "idle in transaction"}


@pytest.fixture
def probe(pg: PgCluster) -> Iterator[DatabaseProbe]:
    probe = DatabaseProbe(pg.url(user="monitor"))
    yield probe
    probe.stop()


def site_here(line: int, function: str) -> str:
    return f"{os.path.relpath(__file__)}:{line} in {function}"


def db(registry: CollectorRegistry, name: str) -> float:
    value = registry.get_sample_value(name, IDLE_TX)
    assert value is not None
    return float(value)


class Story:
    """Reads both sides of the scenario from one registry (pool collector + probe)."""

    def __init__(self, metrics: PoolMetrics, probe: DatabaseProbe) -> None:
        self.metrics = metrics
        self.probe = probe
        metrics.registry.register(probe)

    def read(self) -> tuple[float, float, float]:
        """(transaction age on the server, idle-in-transaction backends, oldest checkout)."""
        assert self.probe.probe_once()
        reg = self.metrics.registry
        age = db(reg, "sqlalchemy_pool_db_oldest_transaction_seconds")
        count = db(reg, "sqlalchemy_pool_db_connections")
        oldest = self.metrics.gauge("oldest_checkout_seconds")
        assert oldest is not None
        return age, count, oldest

    def while_held(self, caplog: pytest.LogCaptureFixture, site: str) -> None:
        wait_for(lambda: self.read()[1] == 1)  # the server has seen the BEGIN
        age1, _, oldest1 = self.read()
        t1 = time.monotonic()
        assert oldest1 >= age1
        time.sleep(1.0)
        age2, count, oldest2 = self.read()
        elapsed = time.monotonic() - t1
        assert count == 1
        assert age2 - age1 == pytest.approx(elapsed, abs=0.25)  # grows with the clock
        assert oldest2 >= age2 > LEAK_THRESHOLD
        assert self.metrics.gauge("leaked_connections") == 1
        assert self.metrics.counters()["leaks"] == 1
        (inst,) = [
            i
            for i in sqlalchemy_pool_exporter.instrumentations()
            if i.stats.name == self.metrics.name
        ]
        (held,) = inst.stats.read().held
        assert held.leaked and held.site == site
        leak_logs = [
            r.getMessage()
            for r in caplog.records
            if r.getMessage().startswith("connection leak suspected")
            and f"pool={self.metrics.name}" in r.getMessage()
        ]
        assert len(leak_logs) == 1
        assert f"site='{site}'" in leak_logs[0]

    def after_close(self) -> None:
        wait_for(lambda: self.read()[1] == 0)
        age, count, oldest = self.read()
        assert (age, count, oldest) == (0.0, 0.0, 0.0)
        assert self.metrics.gauge("leaked_connections") == 0
        assert self.metrics.counters()["leaks"] == 1


def test_idle_in_transaction_sync(
    pg: PgCluster, probe: DatabaseProbe, caplog: pytest.LogCaptureFixture
) -> None:
    name = "idle-tx-psycopg2"
    engine = sync_engine(pg, name, pool_size=2)
    story = Story(PoolMetrics(engine, name, leak_threshold=LEAK_THRESHOLD), probe)
    try:
        with caplog.at_level(logging.INFO, logger="sqlalchemy_pool_exporter"):
            line = sys._getframe().f_lineno + 1
            conn = engine.connect()
            conn.execute(text("SELECT 1"))  # autobegin: the transaction stays open
            story.while_held(caplog, site_here(line, "test_idle_in_transaction_sync"))
            conn.rollback()
            conn.close()
            story.after_close()
    finally:
        sqlalchemy_pool_exporter.uninstrument(engine)
        engine.dispose()


def test_idle_in_transaction_asyncpg(
    pg: PgCluster, probe: DatabaseProbe, caplog: pytest.LogCaptureFixture
) -> None:
    name = "idle-tx-asyncpg"

    async def forgetful_handler(engine: Any) -> tuple[Any, int]:
        line = sys._getframe().f_lineno + 1
        conn = await engine.connect()
        await conn.execute(text("SELECT 1"))
        return conn, line

    async def main() -> None:
        engine = async_engine(pg, name, pool_size=2)
        story = Story(PoolMetrics(engine, name, leak_threshold=LEAK_THRESHOLD), probe)
        try:
            conn, line = await forgetful_handler(engine)
            # The probe and the waits block the loop; the connection just sits there.
            story.while_held(caplog, site_here(line, "forgetful_handler"))
            await conn.rollback()
            await conn.close()
            story.after_close()
        finally:
            sqlalchemy_pool_exporter.uninstrument(engine)
            await engine.dispose()

    with caplog.at_level(logging.INFO, logger="sqlalchemy_pool_exporter"):
        asyncio.run(main())
