"""What the pool object itself says: configured limits, idle connections, static info.

Checked-out and pending counts come from the exporter's own events (the pool's
counters lag inside listeners); everything configured — size, overflow limit, timeout,
recycle — and the idle count is read from ``engine.pool`` afresh at every read, because
``engine.dispose()`` replaces the pool object.

Which pools are *bounded*: only a QueuePool (or its asyncio variant) with
``max_overflow >= 0`` makes callers wait at a limit, so only such a pool has a
``max_connections`` and utilization. NullPool, StaticPool and SingletonThreadPool never
block a caller, and ``max_overflow=-1`` removes the limit.
"""

from __future__ import annotations

from typing import Any, TypedDict

from sqlalchemy.engine import Engine
from sqlalchemy.pool import NullPool, Pool, QueuePool, SingletonThreadPool, StaticPool

from sqlalchemy_pool_exporter.instrumentation import compat


class PoolConfig(TypedDict):
    """Configured shape of a pool and its idle count, read from the pool object."""

    size: int | None
    max_overflow: int | None
    max_connections: int | None
    overflow: int
    idle: int


def read_config(pool: Pool, checked_out: int) -> PoolConfig:
    """Configured limits and the idle count of ``pool``; unknown pool classes get ``None``s."""
    if isinstance(pool, QueuePool):
        size = pool.size()
        max_overflow = compat.max_overflow(pool)
        return {
            "size": size,
            "max_overflow": max_overflow,
            "max_connections": size + max_overflow if max_overflow >= 0 else None,
            "overflow": max(0, pool.overflow()),
            "idle": max(0, pool.checkedin()),
        }
    if isinstance(pool, StaticPool):
        opened = compat.static_connection_open(pool)
        return {
            "size": 1,
            "max_overflow": 0,
            "max_connections": None,
            "overflow": 0,
            "idle": 1 if opened and checked_out == 0 else 0,
        }
    if isinstance(pool, SingletonThreadPool):
        return {
            "size": pool.size,
            "max_overflow": 0,
            "max_connections": None,
            "overflow": 0,
            "idle": max(0, compat.singleton_connections(pool) - checked_out),
        }
    return {"size": None, "max_overflow": None, "max_connections": None, "overflow": 0, "idle": 0}


def default_name(engine: Engine) -> str:
    """Pool name derived from the URL as ``dialect://host:port/database`` (no credentials)."""
    url = engine.url
    host = url.host or ""
    if url.port:
        host = f"{host}:{url.port}"
    database = url.database or ""
    if not host and not database:
        return f"{url.get_backend_name()}://"
    return f"{url.get_backend_name()}://{host}/{database}"


def read_info(engine: Engine) -> dict[str, str]:
    """Static description labels of ``sqlalchemy_pool_info`` (never a user or password)."""
    pool: Any = engine.pool
    timeout = pool.timeout() if isinstance(pool, QueuePool) else None
    recycle = compat.recycle_seconds(pool)
    return {
        "pool_class": type(pool).__name__,
        "dialect": engine.dialect.name,
        "driver": str(engine.dialect.driver),
        "database": engine.url.database or "",
        "host": engine.url.host or "",
        "timeout_seconds": "" if timeout is None else _num(timeout),
        "recycle_seconds": _num(recycle),
        "pre_ping": "true" if compat.pre_ping(pool) else "false",
    }


def is_unbounded_class(pool: Pool) -> bool:
    """True for pool classes that never make a caller wait."""
    return isinstance(pool, (NullPool, StaticPool, SingletonThreadPool))


def _num(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)
