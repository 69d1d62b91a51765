"""The SQLAlchemy private names the exporter relies on exist in the installed release."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import AsyncAdaptedQueuePool, Pool, QueuePool, SingletonThreadPool, StaticPool

from sqlalchemy_pool_exporter.instrumentation import compat


def test_every_private_name_is_there() -> None:
    assert compat.problems() == []


@pytest.mark.parametrize("poolclass", [QueuePool, StaticPool, SingletonThreadPool])
def test_pooled_records_are_the_connections_the_pool_keeps(
    make_engine: Callable[..., Engine], poolclass: type[Pool]
) -> None:
    engine = make_engine(poolclass=poolclass)
    assert compat.pooled_records(engine.pool) == []
    conn = engine.connect()
    record = conn.connection._connection_record  # type: ignore[attr-defined]
    conn.close()
    assert compat.pooled_records(engine.pool) == [record]


def test_pooled_records_of_an_asyncio_queue_pool(tmp_path: Path) -> None:
    engine = create_async_engine(f"sqlite+aiosqlite:///{tmp_path / 'a.db'}")
    pool = engine.sync_engine.pool
    assert isinstance(pool, AsyncAdaptedQueuePool)
    assert compat.pooled_records(pool) == []

    async def one_checkout() -> None:
        async with engine.connect() as conn:
            await conn.execute(text("select 1"))
        assert len(compat.pooled_records(pool)) == 1
        await engine.dispose()

    asyncio.run(one_checkout())
