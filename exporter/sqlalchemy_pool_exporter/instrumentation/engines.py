"""``instrument(engine)``: attach the exporter to an engine, once, reversibly.

The module that holds the engines is imported as ``instrumented``: ``instrument()``
takes a keyword argument ``registry`` (a prometheus_client registry) of its own.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

from prometheus_client import REGISTRY
from pydantic import ValidationError
from sqlalchemy.engine import Engine

from sqlalchemy_pool_exporter.instrumentation import attribution, runtime
from sqlalchemy_pool_exporter.instrumentation import registry as instrumented
from sqlalchemy_pool_exporter.instrumentation.histogram import DEFAULT_BUCKETS, validate_buckets
from sqlalchemy_pool_exporter.instrumentation.poolstate import default_name
from sqlalchemy_pool_exporter.instrumentation.registry import Instrumentation
from sqlalchemy_pool_exporter.instrumentation.settings import AppSettings
from sqlalchemy_pool_exporter.instrumentation.stats import PoolStats
from sqlalchemy_pool_exporter.logs import get_logger
from sqlalchemy_pool_exporter.settings import describe_error

log = get_logger(__name__)
_DEFAULT: Any = object()


def _sync_engine(engine: Any) -> Engine:
    sync = getattr(engine, "sync_engine", engine)
    if not isinstance(sync, Engine):
        raise TypeError(
            f"instrument() takes a sqlalchemy Engine or AsyncEngine, not {type(engine).__name__}"
        )
    return sync


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
    stamp_application_name: bool | None = None,
) -> PoolStats:
    """Attach pool metrics to ``engine`` (sync or async); idempotent; returns its stats."""
    sync = _sync_engine(engine)
    settings = load_settings(
        leak_threshold=leak_threshold,
        peak_window=peak_window,
        push_url=push_url,
        push_interval=push_interval,
        app=app,
        stamp_application_name=stamp_application_name,
    )
    bounds = DEFAULT_BUCKETS if buckets is None else validate_buckets(buckets)
    if name is not None and (not name or len(name) > 200):
        raise ValueError("name must be 1..200 characters")
    with instrumented.lock:
        existing = instrumented.lookup(sync)
        if existing is not None:
            return existing.stats
        stats = PoolStats(
            instrumented.unique_name(name or default_name(sync)),
            leak_threshold=settings.leak_threshold,
            peak_window=settings.peak_window,
            buckets=bounds,
        )
        inst = Instrumentation(sync, stats)
        inst.wiring.attach()
        if settings.stamp_application_name:
            attribution.attach(sync, settings.app, instrumented.reporter)
        instrumented.add(sync, inst)
    if not getattr(sys, "_is_gil_enabled", lambda: True)():
        # The hot path relies on single statements being atomic under the GIL.
        log.warning("free-threaded Python: pool counts may be approximate", pool=stats.name)
    runtime.started(settings, REGISTRY if registry is _DEFAULT else registry)
    log.debug("pool instrumented", pool=stats.name)
    return stats


def uninstrument(engine: Any) -> bool:
    """Detach the exporter from ``engine``; returns False if it was not instrumented."""
    inst = instrumented.remove(_sync_engine(engine))
    if inst is None:
        return False
    inst.wiring.detach()
    attribution.detach(_sync_engine(engine))
    return True
