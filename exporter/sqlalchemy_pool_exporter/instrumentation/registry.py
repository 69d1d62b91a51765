"""The instrumented engines of this process, each with its stats and wiring.

The registry maps each instrumented engine to its :class:`Instrumentation`. It holds
engines weakly: an engine the app drops is forgotten, so instrumenting short-lived
engines leaks nothing. Names are unique among the live engines of a process: a second
engine with the same URL gets ``name#2``.

A dropped engine's stats are *retired* under its name, holding no connection of its, and
the next engine instrumented with that name and the same options carries them on
(:func:`claim`). An app that replaces its engine (a reload, or an engine made for every
request) keeps one pool whose counters only grow, as its series in Prometheus and the
sidecar do: without this, each engine would start from zero, and whatever a short-lived
one counted between two scrapes or pushes would be lost. Only the last
:data:`RETIRED_MAX` names are kept; a forked child keeps none (its parent's counts are
the parent's). Readers (the embedded collector, the pusher, the monitor thread) take
:func:`instrumentations`; only :mod:`~sqlalchemy_pool_exporter.instrumentation.engines`
adds, claims and removes.
"""

from __future__ import annotations

import threading
import weakref
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from sqlalchemy.engine import Engine

from sqlalchemy_pool_exporter.instrumentation.listeners import Wiring
from sqlalchemy_pool_exporter.instrumentation.poolstate import read_info
from sqlalchemy_pool_exporter.instrumentation.stats import PoolStats
from sqlalchemy_pool_exporter.logs import RateLimitedReporter, get_logger

log = get_logger(__name__)
#: Errors inside the exporter, counted and logged at most once a minute per place.
reporter = RateLimitedReporter(log)
#: Guards the registry; also held across fork() (see runtime).
lock = threading.RLock()
_registry: dict[int, Instrumentation] = {}
#: How many dropped engines' stats wait for a successor, by name, oldest out first.
RETIRED_MAX = 64
_retired: OrderedDict[str, PoolStats] = OrderedDict()


class Instrumentation:
    """One engine's exporter state: its stats, its event wiring and its static info."""

    #: Instrumented by ``sqlalchemy-pool-exporter run`` with the environment's options
    #: alone: the app's own ``instrument()`` call, with options of its own, takes over.
    automatic = False

    def __init__(self, engine: Engine, stats: PoolStats) -> None:
        self._engine_ref = weakref.ref(engine)
        self.stats = stats
        self.wiring = Wiring(engine, stats, reporter)
        # (pool object, its info): the description only changes with the pool object,
        # which engine.dispose() replaces. Weak: a replaced pool must be free to go.
        self._info: tuple[weakref.ref[Any], dict[str, str]] | None = None

    @property
    def engine(self) -> Engine | None:
        """The instrumented engine, or None once the app has dropped it."""
        return self._engine_ref()

    def info(self) -> dict[str, str]:
        """Labels of ``sqlalchemy_pool_info`` for the engine's current pool."""
        engine = self.engine
        if engine is None:
            return {}
        pool = engine.pool
        cached = self._info
        if cached is not None and cached[0]() is pool:
            return cached[1]
        info = read_info(engine)
        self._info = (weakref.ref(pool), info)
        return info


def lookup(engine: Engine) -> Instrumentation | None:
    """The live instrumentation of ``engine``, if any."""
    with lock:
        inst = _registry.get(id(engine))
        return inst if inst is not None and inst.engine is engine else None


def unique_name(wanted: str) -> str:
    """``wanted``, or ``wanted#N`` if a live engine of this process has that name."""
    with lock:
        taken = {i.stats.name for i in _registry.values() if i.engine is not None}
    if wanted not in taken:
        return wanted
    n = 2
    while f"{wanted}#{n}" in taken:
        n += 1
    return f"{wanted}#{n}"


def add(engine: Engine, inst: Instrumentation) -> None:
    """Register ``inst`` for ``engine``; forgotten when the engine is collected."""
    key = id(engine)
    with lock:
        _registry[key] = inst
    # Not at exit: finalizers left then all run from weakref's own atexit hook, which runs
    # before the final push whenever it was registered after it (SQLAlchemy 2.0 creates no
    # finalizer of its own earlier), and the final push would find no pool to report.
    weakref.finalize(engine, _forget, key, inst).atexit = False


def remove(engine: Engine) -> Instrumentation | None:
    """Take ``engine``'s instrumentation out of the registry; returns it."""
    with lock:
        inst = lookup(engine)
        if inst is not None:
            del _registry[id(engine)]
        return inst


def _forget(key: int, inst: Instrumentation) -> None:
    with lock:
        if _registry.get(key) is inst:
            del _registry[key]
            stats = inst.stats
            stats.release_connections()
            _retired.pop(stats.name, None)
            _retired[stats.name] = stats
            while len(_retired) > RETIRED_MAX:
                _retired.popitem(last=False)


def claim(name: str, fits: Callable[[PoolStats], bool]) -> PoolStats | None:
    """The retired stats of a dropped engine named ``name``, if ``fits`` them; taken."""
    with lock:
        stats = _retired.get(name)
        if stats is None or not fits(stats):
            return None
        del _retired[name]
        return stats


def clear_retired() -> None:
    """Forget every dropped engine's stats (a forked child's are its parent's)."""
    with lock:
        _retired.clear()


def instrumentations() -> list[Instrumentation]:
    """Every live instrumentation of this process, in instrumenting order."""
    with lock:
        return [i for i in _registry.values() if i.engine is not None]
