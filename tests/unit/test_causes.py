"""Scenario tests: each way a pool runs dry that SQLite can reproduce, and its diagnosis.

Each test reproduces one cause of the runbook's causes table on a real SQLite engine,
asserts the exact signal values a user would scrape, and that
``sqlalchemy_pool_exporter.diagnose(engine)`` names that cause's number with the right
fix; a healthy run yields no finding. The PostgreSQL causes (3, 5, 7, 9) are in
``tests/integration/postgres/test_causes.py``.
"""

from __future__ import annotations

import asyncio
import gc
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from sqlalchemy import Engine, text
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

import sqlalchemy_pool_exporter
from sqlalchemy_pool_exporter.diagnosis.findings import Finding
from sqlalchemy_pool_exporter.diagnosis.inputs import Thresholds
from tests.unit.test_fork import in_child

HERE = Path(__file__).name
#: the line of hold_and_wait that checks out the held connections
HOLD_LINE = next(
    i
    for i, line in enumerate(Path(__file__).read_text().splitlines(), 1)
    if line.endswith("# HOLD_LINE")
)


class Pool:
    """One instrumented engine and the series its private registry serves."""

    def __init__(self, engine: Any, name: str, **kwargs: Any) -> None:
        self.engine, self.name = engine, name
        self.registry = CollectorRegistry()
        sqlalchemy_pool_exporter.instrument(
            engine, name=name, registry=self.registry, **{"leak_threshold": 60.0, **kwargs}
        )

    def get(self, metric: str, **labels: str) -> float | None:
        return self.registry.get_sample_value(metric, {"pool": self.name, **labels})

    def gauge(self, key: str) -> float | None:
        return self.get(f"sqlalchemy_pool_{key}")

    def diagnose(self, **thresholds: Any) -> list[Finding]:
        return sqlalchemy_pool_exporter.diagnose(self.engine, thresholds=Thresholds(**thresholds))


def causes(findings: list[Finding]) -> list[int]:
    return [f.cause for f in findings]


def finding(findings: list[Finding], cause: int) -> Finding:
    (found,) = [f for f in findings if f.cause == cause]
    return found


def wait_for(predicate: Callable[[], Any], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.01)


def here() -> int:
    """The caller's line number."""
    return sys._getframe(1).f_lineno


def test_healthy_run_has_no_finding(make_engine: Callable[..., Engine]) -> None:
    pool = Pool(make_engine(pool_size=2, max_overflow=1), "healthy", leak_threshold=0.05)
    for _ in range(30):
        with pool.engine.connect() as conn:
            conn.execute(text("select 1"))
    time.sleep(0.06)  # past the leak threshold: nothing is held, nothing leaks
    assert pool.diagnose(oldest_wait_seconds=0, long_pool_timeout_seconds=0) == []
    assert pool.gauge("leaked_connections") == 0
    assert pool.get("sqlalchemy_pool_checkouts_total") == 30


def test_cause_1_session_never_closed(make_engine: Callable[..., Engine]) -> None:
    pool = Pool(make_engine(pool_size=2, max_overflow=0), "unclosed", leak_threshold=0.05)
    conn, line = pool.engine.connect(), here()
    wait_for(lambda: pool.gauge("leaked_connections") == 1)
    found = pool.diagnose()
    assert causes(found) == [1]
    site = f"tests/unit/{HERE}:{line} in test_cause_1_session_never_closed"
    assert found[0].evidence["sites"] == [site]
    assert found[0].fix == (
        f"close what you open: `with Session() as s:` / `with engine.connect() as conn:` at {site}"
    )
    conn.close()
    assert pool.gauge("leaked_connections") == 0
    assert pool.diagnose() == []


def hold_and_wait(pool: Pool, n: int) -> tuple[list[Any], threading.Thread, list[Any]]:
    """Check out ``n`` connections, then start a caller that waits for one more."""
    held = [pool.engine.connect() for _ in range(n)]  # HOLD_LINE
    got: list[Any] = []
    waiter = threading.Thread(target=lambda: got.append(pool.engine.connect()))
    waiter.start()
    wait_for(lambda: pool.gauge("pending") == 1)
    return held, waiter, got


def test_cause_2_pool_too_small(make_engine: Callable[..., Engine]) -> None:
    pool = Pool(make_engine(pool_size=2, max_overflow=0, pool_timeout=10), "small")
    held, waiter, got = hold_and_wait(pool, 2)
    assert pool.gauge("utilization_ratio") == 1.0
    found = pool.diagnose(oldest_wait_seconds=60)
    assert causes(found) == [2]
    assert found[0].fix.startswith("pool_size=3 ")
    assert (found[0].evidence["checked_out"], found[0].evidence["pending"]) == (2, 1)
    held[0].close()
    waiter.join(10)
    got[0].close()
    held[1].close()
    assert pool.gauge("pending") == 0 and pool.gauge("oldest_wait_seconds") == 0
    assert pool.diagnose(oldest_wait_seconds=60) == []


def test_cause_11_callers_waiting_now(make_engine: Callable[..., Engine]) -> None:
    pool = Pool(make_engine(pool_size=1, max_overflow=0, pool_timeout=10), "waiting")
    held, waiter, got = hold_and_wait(pool, 1)
    wait_for(lambda: (pool.gauge("oldest_wait_seconds") or 0) >= 0.2)
    found = pool.diagnose(oldest_wait_seconds=0.2)
    assert causes(found) == [2, 11]
    waiting = finding(found, 11)
    assert waiting.evidence["pending"] == 1
    assert 0.2 <= waiting.evidence["oldest_wait_seconds"] < 10
    assert waiting.evidence["holding_sites"] == [f"tests/unit/{HERE}:{HOLD_LINE} in <listcomp>"]
    held[0].close()
    waiter.join(10)
    got[0].close()
    assert pool.gauge("oldest_wait_seconds") == 0
    assert pool.get("sqlalchemy_pool_checkout_cancellations_total") == 0


def test_cause_4_leak_on_error_path(make_engine: Callable[..., Engine]) -> None:
    pool = Pool(make_engine(pool_size=2, max_overflow=0), "error-path")

    def handler() -> None:
        conn = pool.engine.connect()
        conn.execute(text("select 1"))
        raise ValueError("the request failed before close()")

    with pytest.raises(ValueError):
        handler()
    gc.collect()
    assert pool.get("sqlalchemy_pool_gc_reclaimed_total") == 1
    assert pool.get("sqlalchemy_pool_connections", state="checked_out") == 0
    found = pool.diagnose()
    assert causes(found) == [4]
    assert found[0].evidence == {"gc_reclaimed_total": 1}
    assert "finally:" in found[0].fix


def test_cause_6_overflow_too_low_for_bursts(make_engine: Callable[..., Engine]) -> None:
    pool = Pool(make_engine(pool_size=1, max_overflow=1, pool_timeout=0.1), "bursty")
    burst = [pool.engine.connect() for _ in range(2)]
    with pytest.raises(PoolTimeoutError):
        pool.engine.connect()
    for conn in burst:
        conn.close()
    assert pool.gauge("utilization_ratio") == 0.0
    assert pool.gauge("peak_utilization_ratio") == 1.0
    assert pool.get("sqlalchemy_pool_checkout_timeouts_total") == 1
    found = pool.diagnose()
    assert causes(found) == [6]
    assert found[0].fix.startswith("max_overflow=2 ")


def test_cause_8_null_pool(make_engine: Callable[..., Engine]) -> None:
    pool = Pool(make_engine(poolclass=NullPool), "nullpool")
    for _ in range(3):
        with pool.engine.connect() as conn:
            conn.execute(text("select 1"))
    assert pool.get("sqlalchemy_pool_connections_created_total") == 3
    found = pool.diagnose()
    assert causes(found) == [8]
    assert found[0].fix.startswith("drop poolclass=NullPool")


def test_cause_10_engine_per_request(make_engine: Callable[..., Engine]) -> None:
    pool = Pool(make_engine(pool_size=5, max_overflow=0), "per-request")
    for _ in range(20):  # each "request" throws the pool's connections away
        with pool.engine.connect() as conn:
            conn.execute(text("select 1"))
        pool.engine.dispose()
    assert pool.get("sqlalchemy_pool_connections_created_total") == 20
    found = pool.diagnose()
    assert causes(found) == [10]
    assert found[0].fix.startswith("create the engine once per process")


def test_cause_10_inherited_across_fork(make_engine: Callable[..., Engine]) -> None:
    pool = Pool(make_engine(pool_size=5, max_overflow=0), "forked")
    with pool.engine.connect() as conn:
        conn.execute(text("select 1"))

    def child() -> dict[str, Any]:
        with pool.engine.connect() as conn:  # the parent's connection, shared
            conn.execute(text("select 1"))
        return {"causes": [(f.cause, f.fix) for f in pool.diagnose()]}

    report = in_child(child)
    assert [cause for cause, _ in report["causes"]] == [10]
    assert report["causes"][0][1].startswith("engine.dispose(close=False) in each child")
    assert pool.diagnose() == []  # the parent's own connections are its own


def test_cause_12_long_pool_timeout(make_engine: Callable[..., Engine]) -> None:
    pool = Pool(make_engine(pool_size=1, max_overflow=0, pool_timeout=0.3), "hangs")
    held = pool.engine.connect()
    start = time.monotonic()
    with pytest.raises(PoolTimeoutError):
        pool.engine.connect()
    assert time.monotonic() - start >= 0.3
    held.close()
    assert pool.get("sqlalchemy_pool_checkout_timeouts_total") == 1
    # the wait histogram holds the successful checkout and the wait that timed out
    assert pool.get("sqlalchemy_pool_wait_seconds_count") == 2
    found = pool.diagnose(long_pool_timeout_seconds=0.2)
    assert 12 in causes(found)
    hang = finding(found, 12)
    assert hang.evidence["timeout_seconds"] == 0.3
    assert hang.evidence["checkout_timeouts_total"] == 1
    assert hang.fix.startswith("pool_timeout=")
    assert 12 not in causes(pool.diagnose())  # 0.3 s is not long by default


def test_cancelled_wait_counts_once_and_holds_nothing(tmp_path: Path) -> None:
    async def scenario() -> dict[str, Any]:
        engine = create_async_engine(
            f"sqlite+aiosqlite:///{tmp_path / 'cancel.db'}", pool_size=1, max_overflow=0
        )
        pool = Pool(engine, "cancelled")
        try:
            held = await engine.connect()
            task = asyncio.create_task(engine.connect().start())
            deadline = time.monotonic() + 10
            while pool.gauge("pending") != 1:
                assert time.monotonic() < deadline
                await asyncio.sleep(0.01)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            out = {
                "cancellations": pool.get("sqlalchemy_pool_checkout_cancellations_total"),
                "pending": pool.gauge("pending"),
                "checked_out": pool.get("sqlalchemy_pool_connections", state="checked_out"),
                "oldest_wait": pool.gauge("oldest_wait_seconds"),
            }
            await held.close()
            out["after"] = pool.get("sqlalchemy_pool_connections", state="checked_out")
            return out
        finally:
            sqlalchemy_pool_exporter.uninstrument(engine)
            await engine.dispose()

    assert asyncio.run(scenario()) == {
        "cancellations": 1,
        "pending": 0,
        "checked_out": 1,
        "oldest_wait": 0,
        "after": 0,
    }
