"""``instrument(engine)``: attach the exporter to an engine, once, reversibly.

The registry here maps each instrumented engine to its :class:`Instrumentation` (stats,
wiring, name). It holds engines weakly: an engine the app drops is forgotten with its
stats, so instrumenting short-lived engines leaks nothing. Names are unique within a
process: a second engine with the same URL gets ``name#2``.
"""

from __future__ import annotations

import sys
import threading
import weakref
from collections.abc import Sequence
from typing import Any

from prometheus_client import REGISTRY
from pydantic import ValidationError
from sqlalchemy.engine import Engine

from exporter import runtime
from exporter.histogram import DEFAULT_BUCKETS, validate_buckets
from exporter.listeners import Wiring
from exporter.logs import RateLimitedReporter, get_logger
from exporter.poolstate import default_name, read_info
from exporter.settings import AppSettings, describe_error
from exporter.stats import PoolStats

log = get_logger(__name__)
_reporter = RateLimitedReporter(log)
_lock = threading.RLock()
_registry: dict[int, Instrumentation] = {}
_DEFAULT: Any = object()


class Instrumentation:
    """One engine's exporter state: its stats, its event wiring and its static info."""

    def __init__(self, engine: Engine, stats: PoolStats) -> None:
        self._engine_ref = weakref.ref(engine)
        self.stats = stats
        self.wiring = Wiring(engine, stats, _reporter)

    @property
    def engine(self) -> Engine | None:
        """The instrumented engine, or None once the app has dropped it."""
        return self._engine_ref()

    def info(self) -> dict[str, str]:
        """Labels of ``sqlalchemy_pool_info`` for the engine's current pool."""
        engine = self.engine
        return read_info(engine) if engine is not None else {}


def _sync_engine(engine: Any) -> Engine:
    sync = getattr(engine, "sync_engine", engine)
    if not isinstance(sync, Engine):
        raise TypeError(
            f"instrument() takes a sqlalchemy Engine or AsyncEngine, not {type(engine).__name__}"
        )
    return sync


def _unique_name(wanted: str) -> str:
    taken = {i.stats.name for i in _registry.values() if i.engine is not None}
    if wanted not in taken:
        return wanted
    n = 2
    while f"{wanted}#{n}" in taken:
        n += 1
    return f"{wanted}#{n}"


def load_settings(**overrides: Any) -> AppSettings:
    """App settings from the environment with explicit overrides; invalid env is logged."""
    given = {k: v for k, v in overrides.items() if v is not None}
    try:
        return AppSettings(**given)
    except ValidationError as exc:
        if any(str(e["loc"][0]) in given for e in exc.errors() if e.get("loc")):
            raise ValueError(
                describe_error(exc).replace("setting POOL_EXPORTER_", "option ")
            ) from None
        # A bad POOL_EXPORTER_* variable must not take the app down: say so, use defaults.
        log.error("ignoring invalid exporter environment", error=describe_error(exc))
        return AppSettings.model_construct(**AppSettings.model_construct().model_dump() | given)


def instrument(
    engine: Any,
    name: str | None = None,
    *,
    leak_threshold: float | None = None,
    peak_window: float | None = None,
    buckets: Sequence[float] | None = None,
    registry: Any = _DEFAULT,
    push_url: str | None = None,
    push_interval: float | None = None,
    app: str | None = None,
) -> PoolStats:
    """Attach pool metrics to ``engine`` (sync or async); idempotent; returns its stats."""
    sync = _sync_engine(engine)
    settings = load_settings(
        leak_threshold=leak_threshold,
        peak_window=peak_window,
        push_url=push_url,
        push_interval=push_interval,
        app=app,
    )
    bounds = DEFAULT_BUCKETS if buckets is None else validate_buckets(buckets)
    if name is not None and (not name or len(name) > 200):
        raise ValueError("name must be 1..200 characters")
    with _lock:
        existing = _registry.get(id(sync))
        if existing is not None and existing.engine is sync:
            return existing.stats
        stats = PoolStats(
            _unique_name(name or default_name(sync)),
            leak_threshold=settings.leak_threshold,
            peak_window=settings.peak_window,
            buckets=bounds,
        )
        inst = Instrumentation(sync, stats)
        inst.wiring.attach()
        _registry[id(sync)] = inst
        weakref.finalize(sync, _forget, id(sync), inst)
    if not getattr(sys, "_is_gil_enabled", lambda: True)():
        # The hot path relies on single statements being atomic under the GIL.
        log.warning("free-threaded Python: pool counts may be approximate", pool=stats.name)
    runtime.started(settings, REGISTRY if registry is _DEFAULT else registry)
    log.debug("pool instrumented", pool=stats.name)
    return stats


def uninstrument(engine: Any) -> bool:
    """Detach the exporter from ``engine``; returns False if it was not instrumented."""
    sync = _sync_engine(engine)
    with _lock:
        inst = _registry.get(id(sync))
        if inst is None or inst.engine is not sync:
            return False
        del _registry[id(sync)]
    inst.wiring.detach()
    return True


def _forget(key: int, inst: Instrumentation) -> None:
    with _lock:
        if _registry.get(key) is inst:
            del _registry[key]


def instrumentations() -> list[Instrumentation]:
    """Every live instrumentation of this process, in instrumenting order."""
    with _lock:
        return [i for i in _registry.values() if i.engine is not None]


def reporter() -> RateLimitedReporter:
    """The process-wide rate-limited error reporter of the instrumentation."""
    return _reporter
