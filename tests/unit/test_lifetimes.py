"""The exporter keeps nothing alive longer than SQLAlchemy does.

A connection the app drops without ``close()`` goes back to the pool the moment its
last reference goes, through reference counting alone; the exporter must not hold the
proxy (in a frame, a traceback, a closure) so that only the cyclic garbage collector
could return it. Every test here runs with the collector disabled, with leak detection
and checkout sites on (the default), on the first checkout of a pool and again after
``engine.dispose()`` has replaced it.
"""

from __future__ import annotations

import asyncio
import gc
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from sqlalchemy import Engine, exc
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.orm import Session

import sqlalchemy_pool_exporter
from sqlalchemy_pool_exporter.instrumentation import acquire, ledger
from sqlalchemy_pool_exporter.instrumentation.registry import reporter
from tests.conftest import threads_finished

#: What SQLAlchemy says when it reclaims an asyncio connection the app dropped.
RECLAIM_WARNING = "The garbage collector is trying to clean up non-checked-in connection"


@pytest.fixture(autouse=True)
def refcounting_only() -> Iterator[None]:
    """No cyclic garbage collection during the test: only reference counting frees."""
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def sample(registry: CollectorRegistry, name: str, pool: str, **labels: str) -> float | None:
    return registry.get_sample_value(name, {"pool": pool, **labels})


def checked_out(engine: Engine) -> int:
    """The pool's own count of connections handed out and not yet returned."""
    pool: Any = engine.pool  # a QueuePool: checkedout() is not on every pool class
    return int(pool.checkedout())


def assert_returned(engine: Engine, registry: CollectorRegistry, pool: str, drops: int) -> None:
    """Nothing is checked out, by the pool's count and by the exporter's, after ``drops``."""
    assert checked_out(engine) == 0
    assert sample(registry, "sqlalchemy_pool_connections", pool, state="checked_out") == 0
    assert sample(registry, "sqlalchemy_pool_gc_reclaimed_total", pool) == drops
    assert sample(registry, "sqlalchemy_pool_checkouts_total", pool) == drops
    assert sample(registry, "sqlalchemy_pool_use_seconds_count", pool) == drops


@pytest.mark.parametrize(
    "take",
    [Engine.raw_connection, Engine.connect],
    ids=["raw_connection", "connect"],
)
def test_sync_connection_dropped_without_close_is_back_at_once(
    make_engine: Callable[..., Engine],
    registry: CollectorRegistry,
    take: Callable[[Engine], Any],
) -> None:
    engine = make_engine()
    stats = sqlalchemy_pool_exporter.instrument(engine, name="drop", registry=registry)
    assert stats.capture_sites  # leak detection is on by default
    drops = 0
    for _pool in range(3):  # the first pool, then two that engine.dispose() put in place
        for _checkout in range(2):
            conn = take(engine)
            assert checked_out(engine) == 1
            del conn
            drops += 1
            assert_returned(engine, registry, "drop", drops)
        engine.dispose()
    assert drops == 6


def test_dropped_after_a_bookkeeping_error_is_back_at_once(
    make_engine: Callable[..., Engine],
    registry: CollectorRegistry,
    monkeypatch: pytest.MonkeyPatch,
    break_bookkeeping: None,
) -> None:
    # The exception the exporter swallows carries a traceback through the connect
    # wrapper's frame, where the proxy is a local: it must not outlive the checkout.
    engine = make_engine()
    engine.raw_connection().close()  # the DBAPI connection is opened before instrumenting
    sqlalchemy_pool_exporter.instrument(engine, name="error", registry=registry)
    # The error counts and the log's rate limit are per process: leave them as found.
    monkeypatch.setattr(reporter, "counts", dict(reporter.counts))
    monkeypatch.setattr(reporter, "_last", dict(reporter._last))
    before = reporter.counts.get("checkout", 0)

    conn = engine.raw_connection()
    del conn
    assert checked_out(engine) == 0
    assert reporter.counts["checkout"] == before + 1  # the error did happen


def test_dropped_in_a_shallower_stack_is_back_at_once(
    make_engine: Callable[..., Engine],
    registry: CollectorRegistry,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A checkout from a stack shallower than where the last site was found makes the
    # frame look-up raise ValueError (and its traceback refers to the wrapper's frame).
    engine = make_engine()
    depths: list[tuple[int, bool]] = []

    def getframe(depth: int) -> Any:
        try:
            frame = sys._getframe(depth + 1)  # +1: this function's own frame
        except ValueError:
            depths.append((depth, False))
            raise
        depths.append((depth, True))
        return frame

    monkeypatch.setattr(acquire, "_getframe", getframe)  # what the wrappers take
    sqlalchemy_pool_exporter.instrument(engine, name="shallow", registry=registry)
    with Session(engine) as session:  # ORM: the app's frame is far from the pool
        session.connection()
    thread = threading.Thread(target=engine.raw_connection)  # drops what it returns
    thread.start()
    thread.join()
    assert checked_out(engine) == 0
    assert sample(registry, "sqlalchemy_pool_gc_reclaimed_total", "shallow") == 1
    assert depths[-1][1] is False  # the thread's checkout took the ValueError path
    # Never the Python wrapper's own frame; the compiled one has none, so its caller's is 0.
    assert min(depth for depth, _ in depths) >= (0 if ledger.Checkout else 1)


def test_async_connection_dropped_without_close_is_back_at_once(
    tmp_path: Path, registry: CollectorRegistry
) -> None:
    engine = create_async_engine(f"sqlite+aiosqlite:///{tmp_path / 'a.db'}")
    stats = sqlalchemy_pool_exporter.instrument(engine, name="adrop", registry=registry)
    assert stats.capture_sites

    threads_before = set(threading.enumerate())

    async def main(engine: AsyncEngine) -> int:
        drops = 0
        for _pool in range(3):
            for take in (engine.connect, engine.raw_connection) * 2:
                conn = await take()
                assert checked_out(engine.sync_engine) == 1
                # An asyncio connection cannot be reset outside its event loop: SQLAlchemy
                # detaches and terminates it, and says so, right at the del.
                with pytest.warns(exc.SAWarning, match=RECLAIM_WARNING):
                    del conn
                drops += 1
                assert_returned(engine.sync_engine, registry, "adrop", drops)
            await engine.dispose()
        await threads_finished(threads_before)
        return drops

    try:
        assert asyncio.run(main(engine)) == 12
    finally:
        sqlalchemy_pool_exporter.uninstrument(engine)
