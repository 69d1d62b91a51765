"""SQLAlchemy's private names the exporter relies on: all present, each missed by name.

When a SQLAlchemy release renames or drops one, ``test_installed_sqlalchemy_has_every_name``
fails with one line per name saying what it was for (the fix then belongs in
``instrumentation/compat.py``). The other test takes each name away from the installed
SQLAlchemy in turn and checks that exactly its line comes out.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import AsyncAdaptedQueuePool, Pool, QueuePool, SingletonThreadPool, StaticPool
from sqlalchemy.pool.base import _ConnectionFairy, _ConnectionRecord

from sqlalchemy_pool_exporter.instrumentation import compat


def test_installed_sqlalchemy_has_every_name() -> None:
    assert compat.problems() == []


#: (class that carries the name, name, the line problems() must give without it)
NAMES: list[tuple[type, str, str]] = [
    *((QueuePool, name, f"Pool.{name} is gone ({what})") for name, what in compat.WRAPPED_METHODS),
    (
        _ConnectionFairy,
        "_checkout",
        "_ConnectionFairy._checkout is gone (what Pool.connect forwards to)",
    ),
    *(
        (QueuePool, name, f"QueuePool.{name} is gone (pool configuration)")
        for name in ("_max_overflow", "_recycle", "_pre_ping")
    ),
    (
        SingletonThreadPool,
        "_all_conns",
        "SingletonThreadPool._all_conns is gone (its connection count)",
    ),
    *(
        (_ConnectionFairy, name, f"_ConnectionFairy.{name} is gone ({what})")
        for name, what in compat.FAIRY_ATTRIBUTES
    ),
    *(
        (_ConnectionRecord, name, f"_ConnectionRecord.{name} is gone ({what})")
        for name, what in compat.RECORD_ATTRIBUTES
    ),
]


def take_away(monkeypatch: pytest.MonkeyPatch, cls: type, name: str) -> None:
    """Make ``name`` disappear from ``cls`` as a release that dropped it would."""
    for klass in cls.__mro__:
        if name in vars(klass):  # a method, or a slot's descriptor
            monkeypatch.delattr(klass, name)
        slots = vars(klass).get("__slots__")
        if isinstance(slots, tuple) and name in slots:
            monkeypatch.setattr(klass, "__slots__", tuple(s for s in slots if s != name))
    if issubclass(cls, Pool):  # an attribute __init__ sets on every pool
        init = cls.__init__

        def init_without(self: Pool, *args: object, **kwargs: object) -> None:
            init(self, *args, **kwargs)  # type: ignore[arg-type]
            vars(self).pop(name, None)

        monkeypatch.setattr(cls, "__init__", init_without)


@pytest.mark.parametrize(("cls", "name", "line"), NAMES, ids=[n for _, n, _ in NAMES])
def test_each_missing_name_is_one_line_naming_it(
    monkeypatch: pytest.MonkeyPatch, cls: type, name: str, line: str
) -> None:
    take_away(monkeypatch, cls, name)
    assert compat.problems() == [line]


def test_every_name_compat_lists_is_covered() -> None:
    tables = (compat.WRAPPED_METHODS, compat.FAIRY_ATTRIBUTES, compat.RECORD_ATTRIBUTES)
    listed = {name for table in tables for name, _ in table}
    assert listed <= {name for _, name, _ in NAMES}


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
