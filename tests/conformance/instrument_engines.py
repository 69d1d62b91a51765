"""pytest plugin for SQLAlchemy's own test suite: instrument every engine and pool it creates.

Loaded by ``scripts/conformance.py`` with ``-p instrument_engines`` (this directory on
``PYTHONPATH``) into a run of SQLAlchemy's tests; it is not a test module of this project.

* **Engines.** ``create_engine()`` ends by calling its dialect class's
  ``engine_created`` hook; the plugin extends the base ``Dialect`` hook, which every
  dialect inherits, to call ``sqlalchemy_pool_exporter.instrument(engine, registry=None)``
  with default options (leak detection and checkout sites on). Async engines are
  covered through the sync engine ``create_async_engine()`` builds with ``create_engine()``.
* **Stand-alone pools.** SQLAlchemy's pool tests build pools without an engine
  (``QueuePool(creator=...)``); a pool created outside ``create_engine()`` and outside
  ``Pool.recreate()`` (whose result the exporter wraps itself) is instrumented through a
  throwaway ``Engine`` around it, so the pool's wrappers and listeners are the ones an
  app's engine would get.

Everything counts: engines and pools instrumented, and the checkouts the exporter saw
during the test that instrumented them. A run that instrumented no engine or saw no
checkout proves nothing and fails.
``POOL_EXPORTER_CONFORMANCE_COUNT`` names a file that receives the counts.
"""

from __future__ import annotations

import inspect
import json
import os
import sys
from typing import Any

import pytest
import sqlalchemy
from sqlalchemy.engine import Engine
from sqlalchemy.engine.default import DefaultDialect
from sqlalchemy.engine.interfaces import Dialect
from sqlalchemy.engine.url import make_url
from sqlalchemy.pool import Pool

import sqlalchemy_pool_exporter

_engine_created = Dialect.__dict__["engine_created"].__func__
_pool_init = Pool.__init__
_SQLALCHEMY_DIR = os.path.dirname(os.path.abspath(sqlalchemy.__file__ or ""))
#: Stats of what the current test instrumented; their checkouts are added up after it.
#: Never kept longer: a stats object holds the records of unreturned checkouts.
_stats: list[sqlalchemy_pool_exporter.PoolStats] = []
engines = 0
pools = 0
checkouts = 0


def engine_created(cls: type[Dialect], engine: Engine) -> None:
    """``Dialect.engine_created``, then instrument the new engine."""
    global engines
    _engine_created(cls, engine)
    _stats.append(sqlalchemy_pool_exporter.instrument(engine, registry=None))
    engines += 1


def _made_by_sqlalchemy(frame: Any) -> bool:
    """True inside ``create_engine()`` or ``Pool.recreate()``: the exporter sees those pools."""
    while frame is not None:
        code = frame.f_code
        if code.co_name in ("create_engine", "recreate") and code.co_filename.startswith(
            _SQLALCHEMY_DIR
        ):
            return True
        frame = frame.f_back
    return False


def pool_init(
    self: Pool,
    creator: Any,
    recycle: int = -1,
    echo: Any = None,
    logging_name: str | None = None,
    reset_on_return: Any = True,
    events: Any = None,
    dialect: Any = None,
    pre_ping: bool = False,
    _dispatch: Any = None,
) -> None:
    """``Pool.__init__``, then instrument the pool if it is a stand-alone one."""
    # create_engine() finds the pool's keyword arguments by reading the parameter names
    # of each __init__ up the class tree: this one must name the same ones as the original.
    global pools
    _pool_init(
        self,
        creator,
        recycle=recycle,
        echo=echo,
        logging_name=logging_name,
        reset_on_return=reset_on_return,
        events=events,
        dialect=dialect,
        pre_ping=pre_ping,
        _dispatch=_dispatch,
    )
    if not _made_by_sqlalchemy(sys._getframe(1)):
        shell = Engine(self, DefaultDialect(), make_url("sqlite://"))
        _stats.append(sqlalchemy_pool_exporter.instrument(shell, registry=None))
        pools += 1


def _parameters(fn: Any) -> list[tuple[str, Any, Any]]:
    return [(p.name, p.default, p.kind) for p in inspect.signature(fn).parameters.values()]


if _parameters(pool_init) != _parameters(_pool_init):
    raise RuntimeError(
        f"Pool.__init__ of SQLAlchemy {sqlalchemy.__version__} takes "
        f"{inspect.signature(_pool_init)}: update pool_init() in {__file__} to match"
    )
Dialect.engine_created = classmethod(engine_created)  # type: ignore[assignment,method-assign]
Pool.__init__ = pool_init  # type: ignore[method-assign]


def _count_checkouts() -> None:
    global checkouts
    checkouts += sum(s.checkouts for s in _stats)
    _stats.clear()


def pytest_runtest_logfinish(nodeid: str, location: Any) -> None:
    _count_checkouts()


def counts() -> dict[str, int]:
    """What the exporter instrumented and saw (checkouts: during the test that made it)."""
    _count_checkouts()
    return {"engines": engines, "pools": pools, "checkouts": checkouts}


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    seen = counts()
    path = os.environ.get("POOL_EXPORTER_CONFORMANCE_COUNT")
    if path:
        with open(path, "w") as f:
            json.dump(seen, f)
    if session.testscollected and not (seen["engines"] and seen["checkouts"]):
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter: Any) -> None:
    seen = counts()
    terminalreporter.write_line(
        f"pool exporter: {seen['engines']} engines, {seen['pools']} stand-alone pools "
        f"instrumented, {seen['checkouts']} checkouts counted"
    )
