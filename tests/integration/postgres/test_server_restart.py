"""Scenario 3: the server restarts while the app is busy.

Three workers query in a loop through a ``pool_pre_ping`` pool of 3. The server is
stopped (``pg_ctl stop -m fast``: clients are disconnected) and started again.

What must hold, counted exactly against independent witnesses:

* while the server is down, the probe reports ``sqlalchemy_pool_db_up 0`` and every
  refused checkout is one failed connection attempt:
  ``connect_errors_total`` equals the failures the app saw at ``engine.connect()`` and
  equals SQLAlchemy's own ``do_connect`` attempts minus its ``connect`` events;
* ``connections_created_total`` equals SQLAlchemy's ``connect`` events;
* every successful ``engine.connect()`` is one checkout, whether its query then worked
  or died with the server, and every checkout ended: ``checked_out`` and ``pending``
  are back to 0 and ``use_seconds_count`` equals ``checkouts_total`` (no stuck count).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from typing import Any

from sqlalchemy import event, text

import sqlalchemy_pool_exporter
from sqlalchemy_pool_exporter.probes.postgres import DatabaseProbe
from tests.integration.pgcluster import PgCluster, wait_for
from tests.integration.postgres.helpers import PoolMetrics, async_engine, sync_engine

WORKERS = 3
POOL = {"pool_size": 3, "max_overflow": 0, "pool_pre_ping": True, "pool_timeout": 10}


class Tally:
    """What the app and SQLAlchemy itself saw, for comparison with the exporter."""

    def __init__(self, sync_engine: Any) -> None:
        self.ok = 0
        self.query_failed = 0
        self.connect_failed = 0
        self.attempts = 0
        self.opened = 0
        self.invalidated = 0
        self.finished = 0
        self.lock = threading.Lock()
        event.listen(sync_engine, "do_connect", self._count("attempts"))
        event.listen(sync_engine, "connect", self._count("opened"))
        event.listen(sync_engine, "invalidate", self._count("invalidated"))

    def _count(self, field: str) -> Callable[..., None]:
        def listener(*_: Any) -> None:
            self.add(field)

        return listener

    def add(self, field: str) -> None:
        with self.lock:
            setattr(self, field, getattr(self, field) + 1)


def run_phases(
    pg: PgCluster, metrics: PoolMetrics, tally: Tally, wait: Callable[[Callable[[], Any]], None]
) -> None:
    """Load, stop the server, see errors counted while down, start, see recovery."""
    probe = DatabaseProbe(pg.url(user="monitor"))
    metrics.registry.register(probe)
    up = {"database": "postgres"}
    try:
        wait(lambda: tally.ok >= 30)
        assert probe.probe_once()
        assert metrics.registry.get_sample_value("sqlalchemy_pool_db_up", up) == 1
        pg.stop()
        wait(lambda: metrics.counters()["connect_errors"] >= 6)
        assert tally.connect_failed >= 6
        assert not probe.probe_once()
        assert metrics.registry.get_sample_value("sqlalchemy_pool_db_up", up) == 0
        assert 0 <= (metrics.gauge("checked_out") or 0) <= WORKERS
        ok_before = tally.ok
        pg.start()
        wait(lambda: tally.ok >= ok_before + 30)
        assert probe.probe_once()
        assert metrics.registry.get_sample_value("sqlalchemy_pool_db_up", up) == 1
    finally:
        probe.stop()


def check(metrics: PoolMetrics, tally: Tally) -> None:
    counters = metrics.counters()
    print("exporter:", counters, "app/SQLAlchemy:", vars(tally))  # shown on failure
    assert tally.finished == WORKERS  # no worker died of an unexpected error
    assert counters["connect_errors"] == tally.connect_failed == tally.attempts - tally.opened
    assert counters["connections_created"] == tally.opened
    assert counters["checkouts"] == tally.ok + tally.query_failed
    # Pre-ping catches the dead connections met at checkout; queries in flight when the
    # server stopped get the error: which of the two depends on timing, the sum does not.
    hard = {k: v for k, v in counters.items() if k.startswith("invalidations_hard_")}
    assert sum(hard.values()) == tally.invalidated >= 1
    assert hard["invalidations_hard_explicit"] == hard["invalidations_hard_other"] == 0
    assert not any(v for k, v in counters.items() if k.startswith("invalidations_soft_"))
    assert counters["checkout_timeouts"] == 0
    assert metrics.gauge("checked_out") == 0
    assert metrics.gauge("pending") == 0
    assert metrics.histogram("use_seconds")["count"] == counters["checkouts"]
    assert metrics.gauge("idle") == WORKERS  # the pool is whole again


def test_restart_under_load_sync(pg: PgCluster) -> None:
    name = "restart-psycopg2"
    engine = sync_engine(pg, name, **POOL)
    metrics = PoolMetrics(engine, name)
    tally = Tally(engine)
    stop = threading.Event()

    def work() -> None:
        while not stop.is_set():
            try:
                conn = engine.connect()
            except Exception:
                tally.add("connect_failed")
                time.sleep(0.02)
                continue
            failed = False
            try:
                conn.execute(text("SELECT 1"))
            except Exception:
                failed = True
            try:  # ending the transaction on a connection the server dropped may fail too
                conn.close()
            except Exception:
                failed = True
            tally.add("query_failed" if failed else "ok")
            time.sleep(0.005)
        tally.add("finished")

    workers = [threading.Thread(target=work) for _ in range(WORKERS)]
    try:
        for t in workers:
            t.start()
        run_phases(pg, metrics, tally, lambda p: wait_for(p, timeout=30))
    finally:
        stop.set()
        for t in workers:
            t.join(30)
    try:
        check(metrics, tally)
    finally:
        sqlalchemy_pool_exporter.uninstrument(engine)
        engine.dispose()


def test_restart_under_load_asyncpg(pg: PgCluster) -> None:
    name = "restart-asyncpg"

    async def main() -> None:
        engine = async_engine(pg, name, **POOL)
        metrics = PoolMetrics(engine, name)
        tally = Tally(engine.sync_engine)
        stop = asyncio.Event()

        async def work() -> None:
            while not stop.is_set():
                try:
                    conn = await engine.connect()
                except Exception:
                    tally.add("connect_failed")
                    await asyncio.sleep(0.02)
                    continue
                failed = False
                try:
                    await conn.execute(text("SELECT 1"))
                except Exception:
                    failed = True
                try:
                    await conn.close()
                except Exception:
                    failed = True
                tally.add("query_failed" if failed else "ok")
                await asyncio.sleep(0.005)
            tally.add("finished")

        workers = [asyncio.create_task(work()) for _ in range(WORKERS)]

        try:
            loop = asyncio.get_running_loop()
            # Server control blocks; run it in a thread so the workers keep working.
            await loop.run_in_executor(
                None, run_phases, pg, metrics, tally, lambda p: wait_for(p, timeout=30)
            )
        finally:
            stop.set()
            await asyncio.gather(*workers)
        try:
            check(metrics, tally)
        finally:
            sqlalchemy_pool_exporter.uninstrument(engine)
            await engine.dispose()

    asyncio.run(main())
