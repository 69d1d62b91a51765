"""fork() with a pool that holds connections: what the child inherits, what the parent lends.

Real ``os.fork()`` of the test process on real SQLite engines. The child does its part,
reports through a pipe as JSON, and leaves with ``os._exit`` (no atexit, no pytest).
"""

from __future__ import annotations

import json
import logging
import os
import signal
from collections.abc import Callable
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from sqlalchemy import Engine, text
from sqlalchemy.pool import Pool, QueuePool, SingletonThreadPool, StaticPool

import sqlalchemy_pool_exporter

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork()")
FORKS_LOGGER = "sqlalchemy_pool_exporter.instrumentation.forks"
INHERITED = "sqlalchemy_pool_fork_inherited_connections_total"
WARNING = (
    "pooled connection inherited across fork() is in use, sharing its socket with the"
    " parent process: call engine.dispose(close=False) in the child"
    " (e.g. in gunicorn's post_fork)"
)


class _Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(f"{record.levelname} {record.getMessage()}")


def in_child(work: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """Run ``work`` in a forked child; returns its report plus the child's pid and log lines."""
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:
        status = 1
        try:
            signal.alarm(10)
            handler = _Lines()
            logging.getLogger(FORKS_LOGGER).addHandler(handler)
            report = {**work(), "pid": os.getpid(), "log": handler.lines}
            os.write(write_fd, json.dumps(report).encode())
            status = 0
        finally:
            os._exit(status)
    os.close(write_fd)
    _, wait_status = os.waitpid(pid, 0)
    data = b""
    while chunk := os.read(read_fd, 65536):
        data += chunk
    os.close(read_fd)
    assert os.waitstatus_to_exitcode(wait_status) == 0, "the child failed"
    report: dict[str, Any] = json.loads(data)
    return report


def use(engine: Engine, times: int = 3, at_once: int = 2) -> None:
    """Check out ``at_once`` connections together, query on each, return them; repeat."""
    for _ in range(times):
        conns = [engine.connect() for _ in range(at_once)]
        for conn in conns:
            assert conn.execute(text("select 1")).scalar() == 1
        for conn in conns:
            conn.close()


def sample(registry: CollectorRegistry, name: str, pool: str) -> float | None:
    return registry.get_sample_value(name, {"pool": pool})


def test_child_counts_each_inherited_connection_once_and_warns_once(
    make_engine: Callable[..., Engine], registry: CollectorRegistry
) -> None:
    engine = make_engine(pool_size=5, max_overflow=10)
    sqlalchemy_pool_exporter.instrument(engine, name="inherits", registry=registry)
    held = engine.connect()  # checked out at fork time: comes back to the pool in the child
    idle = engine.connect()
    idle.execute(text("select 1"))
    idle.close()  # idle in the pool at fork time

    def child() -> dict[str, Any]:
        held.close()
        use(engine)  # 3 rounds over the same 2 inherited connections
        return {
            "inherited": sample(registry, INHERITED, "inherits"),
            "checkouts": sample(registry, "sqlalchemy_pool_checkouts_total", "inherits"),
        }

    report = in_child(child)
    assert report["inherited"] == 2
    assert report["checkouts"] == 6
    assert report["log"] == [f"WARNING {WARNING} pool=inherits pid={report['pid']}"]
    held.close()
    use(engine)
    assert sample(registry, INHERITED, "inherits") == 0  # the parent's are its own


def test_child_that_disposed_the_inherited_pool_counts_nothing(
    make_engine: Callable[..., Engine], registry: CollectorRegistry
) -> None:
    engine = make_engine(pool_size=5, max_overflow=10)
    sqlalchemy_pool_exporter.instrument(engine, name="disposes", registry=registry)
    use(engine, times=1)

    def child() -> dict[str, Any]:
        engine.dispose(close=False)  # what gunicorn's post_fork should do
        use(engine)
        return {
            "inherited": sample(registry, INHERITED, "disposes"),
            "created": sample(registry, "sqlalchemy_pool_connections_created_total", "disposes"),
        }

    report = in_child(child)
    assert report == {"inherited": 0, "created": 2, "pid": report["pid"], "log": []}


def test_connection_reopened_before_use_is_the_childs_own(
    make_engine: Callable[..., Engine], registry: CollectorRegistry
) -> None:
    # pool_recycle=0: every checkout closes the record's connection and opens a new one,
    # so the child never uses the inherited connection itself.
    engine = make_engine(pool_recycle=0)
    sqlalchemy_pool_exporter.instrument(engine, name="recycles", registry=registry)
    use(engine, times=1)

    def child() -> dict[str, Any]:
        use(engine)
        return {"inherited": sample(registry, INHERITED, "recycles")}

    report = in_child(child)
    assert (report["inherited"], report["log"]) == (0, [])


@pytest.mark.parametrize("poolclass", [QueuePool, StaticPool, SingletonThreadPool])
def test_every_pool_class_that_keeps_connections_is_watched(
    make_engine: Callable[..., Engine],
    registry: CollectorRegistry,
    poolclass: type[Pool],
) -> None:
    engine = make_engine(poolclass=poolclass)
    sqlalchemy_pool_exporter.instrument(engine, name="kept", registry=registry)
    use(engine, times=1, at_once=1)

    def child() -> dict[str, Any]:
        use(engine, at_once=1)
        return {"inherited": sample(registry, INHERITED, "kept")}

    report = in_child(child)
    assert report["inherited"] == 1
    assert len(report["log"]) == 1


def test_forking_parent_adds_no_capacity_until_it_uses_its_pool(
    make_engine: Callable[..., Engine], registry: CollectorRegistry
) -> None:
    engine = make_engine(pool_size=5, max_overflow=10)
    sqlalchemy_pool_exporter.instrument(engine, name="lends", registry=registry)

    def limits() -> tuple[float | None, ...]:
        return tuple(
            sample(registry, f"sqlalchemy_pool_{name}", "lends")
            for name in ("size", "max_overflow", "max_connections")
        )

    held = engine.connect()
    child = in_child(lambda: {"limits": limits()})
    assert child["limits"] == [5, 10, 15]  # a worker: full capacity
    assert limits() == (5, 10, 15)  # holds a connection: serves
    held.close()
    # Forked, holds none, no checkout since: its pool is only handed down.
    assert limits() == (0, 0, 0)
    idle = registry.get_sample_value(
        "sqlalchemy_pool_connections", {"pool": "lends", "state": "idle"}
    )
    assert idle == 1  # its open connection is still real
    in_child(lambda: {})  # forking again changes nothing
    assert limits() == (0, 0, 0)
    use(engine, times=1, at_once=1)  # it serves after all: counts again, and stays
    assert limits() == (5, 10, 15)
    in_child(lambda: {})
    assert limits() == (5, 10, 15)
