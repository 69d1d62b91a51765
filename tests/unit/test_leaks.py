"""Leak detection and garbage-collector reclaims, with the code site that leaked."""

from __future__ import annotations

import asyncio
import gc
import logging
import threading
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry
from sqlalchemy import Engine, text
from sqlalchemy.ext.asyncio import create_async_engine

import sqlalchemy_pool_exporter
from tests.conftest import threads_finished, wait_for


def sample(registry: CollectorRegistry, name: str, pool: str) -> float | None:
    return registry.get_sample_value(name, {"pool": pool})


def test_leak_is_flagged_once_logged_with_site_and_released(
    make_engine: Callable[..., Engine],
    registry: CollectorRegistry,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="sqlalchemy_pool_exporter")
    engine = make_engine()
    stats = sqlalchemy_pool_exporter.instrument(
        engine, name="leaky", registry=registry, leak_threshold=0.3
    )
    conn = engine.connect()  # <- the leak site
    line = _line_of("# <- the leak site")
    conn.execute(text("SELECT 1"))
    assert sample(registry, "sqlalchemy_pool_leaked_connections", "leaky") == 0

    wait_for(lambda: sample(registry, "sqlalchemy_pool_leaked_connections", "leaky") == 1)
    assert sample(registry, "sqlalchemy_pool_leaks_total", "leaky") == 1

    def older_and_counted_once() -> bool:
        # Every scrape scans too, and the monitor thread scans each second meanwhile.
        assert sample(registry, "sqlalchemy_pool_leaks_total", "leaky") == 1
        oldest = sample(registry, "sqlalchemy_pool_oldest_checkout_seconds", "leaky")
        return oldest is not None and oldest >= 1.5

    wait_for(older_and_counted_once)

    warnings_ = [
        r for r in caplog.records if r.getMessage().startswith("connection leak suspected")
    ]
    assert len(warnings_) == 1
    record = warnings_[0]
    assert (
        record.levelno == logging.WARNING
        and record.name == "sqlalchemy_pool_exporter.instrumentation.stats"
    )
    fields = record.pool_exporter  # type: ignore[attr-defined]
    assert fields["pool"] == "leaky"
    test_name = "test_leak_is_flagged_once_logged_with_site_and_released"
    assert fields["site"] == f"tests/unit/test_leaks.py:{line} in {test_name}"
    assert fields["thread"] == "MainThread"
    assert 0.3 < fields["age_seconds"] < 1.5

    conn.close()
    assert sample(registry, "sqlalchemy_pool_leaked_connections", "leaky") == 0
    assert sample(registry, "sqlalchemy_pool_leaks_total", "leaky") == 1
    returned = [
        r for r in caplog.records if r.getMessage().startswith("leaked connection returned")
    ]
    assert len(returned) == 1 and returned[0].levelno == logging.INFO
    assert returned[0].pool_exporter["reclaimed_by_gc"] is False  # type: ignore[attr-defined]
    assert stats.read().held == []


def test_leak_threshold_zero_turns_detection_off(
    make_engine: Callable[..., Engine], registry: CollectorRegistry
) -> None:
    engine = make_engine()
    stats = sqlalchemy_pool_exporter.instrument(
        engine, name="off", registry=registry, leak_threshold=0
    )
    conn = engine.connect()
    time.sleep(0.2)
    assert sample(registry, "sqlalchemy_pool_leaked_connections", "off") == 0
    assert sample(registry, "sqlalchemy_pool_leaks_total", "off") == 0
    assert stats.read().held[0].site == "unknown"
    conn.close()


def test_sync_connection_reclaimed_by_gc_is_counted(
    make_engine: Callable[..., Engine], registry: CollectorRegistry
) -> None:
    engine = make_engine()
    sqlalchemy_pool_exporter.instrument(engine, name="gc", registry=registry)
    conn = engine.raw_connection()
    assert (
        registry.get_sample_value(
            "sqlalchemy_pool_connections", {"pool": "gc", "state": "checked_out"}
        )
        == 1
    )
    del conn
    gc.collect()
    assert sample(registry, "sqlalchemy_pool_gc_reclaimed_total", "gc") == 1
    assert (
        registry.get_sample_value(
            "sqlalchemy_pool_connections", {"pool": "gc", "state": "checked_out"}
        )
        == 0
    )
    assert sample(registry, "sqlalchemy_pool_use_seconds_count", "gc") == 1
    engine.raw_connection().close()  # a normal close is not a reclaim
    assert sample(registry, "sqlalchemy_pool_gc_reclaimed_total", "gc") == 1


def test_async_connection_reclaimed_by_gc_is_counted(
    tmp_path: Path, registry: CollectorRegistry
) -> None:
    engine = create_async_engine(f"sqlite+aiosqlite:///{tmp_path / 'a.db'}")
    sqlalchemy_pool_exporter.instrument(engine, name="agc", registry=registry)

    async def leak() -> None:
        conn = await engine.connect()
        await conn.execute(text("SELECT 1"))
        del conn

    threads_before = set(threading.enumerate())

    async def main() -> None:
        await leak()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # SQLAlchemy warns about the unreturned connection
            gc.collect()
        # aiosqlite closes the reclaimed connection on its own thread: wait for it.
        deadline = time.monotonic() + 10
        while sample(registry, "sqlalchemy_pool_gc_reclaimed_total", "agc") != 1:
            assert time.monotonic() < deadline, "the reclaimed connection was not counted"
            await asyncio.sleep(0.01)
        await threads_finished(threads_before)

    asyncio.run(main())
    try:
        assert sample(registry, "sqlalchemy_pool_gc_reclaimed_total", "agc") == 1
        assert (
            registry.get_sample_value(
                "sqlalchemy_pool_connections", {"pool": "agc", "state": "checked_out"}
            )
            == 0
        )
        assert sample(registry, "sqlalchemy_pool_checkouts_total", "agc") == 1
    finally:
        sqlalchemy_pool_exporter.uninstrument(engine)
        asyncio.run(engine.dispose())


def _line_of(marker: str) -> int:
    """Line number in this file of the line containing ``marker``."""
    for number, text_ in enumerate(Path(__file__).read_text().splitlines(), start=1):
        if text_.rstrip().endswith(marker) and "_line_of(" not in text_:
            return number
    raise AssertionError(marker)
