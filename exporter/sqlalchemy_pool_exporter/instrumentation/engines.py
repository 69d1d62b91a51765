"""``instrument(engine)``: attach the exporter to an engine, once, reversibly.

Instrumenting an engine again returns its stats: the first options stay. One exception:
an engine ``sqlalchemy-pool-exporter run`` instrumented on its own (environment options
only, :func:`instrument_automatically`) takes the options of the app's own call —
re-attached if they differ, so the app's ``name=`` and thresholds are what it reports.

The module that holds the engines is imported as ``instrumented``: ``instrument()``
takes a keyword argument ``registry`` (a prometheus_client registry) of its own.
"""

from __future__ import annotations

import inspect
import sys
from collections.abc import Sequence
from typing import Any

from prometheus_client import REGISTRY
from pydantic import ValidationError
from sqlalchemy.engine import Engine

from sqlalchemy_pool_exporter.instrumentation import attribution, embedded, runtime
from sqlalchemy_pool_exporter.instrumentation import registry as instrumented
from sqlalchemy_pool_exporter.instrumentation.histogram import DEFAULT_BUCKETS, validate_buckets
from sqlalchemy_pool_exporter.instrumentation.poolstate import default_name
from sqlalchemy_pool_exporter.instrumentation.registry import Instrumentation
from sqlalchemy_pool_exporter.instrumentation.settings import AppSettings
from sqlalchemy_pool_exporter.instrumentation.stats import PoolStats
from sqlalchemy_pool_exporter.logs import get_logger
from sqlalchemy_pool_exporter.settings import PREFIX, describe_error, error_message

log = get_logger(__name__)
_DEFAULT: Any = object()


def sync_engine(engine: Any) -> Engine:
    """The sync Engine behind ``engine`` (itself, or an AsyncEngine's); TypeError otherwise."""
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
        for error in exc.errors():
            if error.get("loc") and str(error["loc"][0]) in given:
                raise ValueError(
                    f"invalid option {error['loc'][0]}: {error_message(error)}"
                ) from None
        # A bad POOL_EXPORTER_* variable must not take the app down, nor switch the good
        # ones off: name it, then read everything again with that one at its default
        # (an explicit value wins over the environment).
        defaults: dict[str, Any] = {}
        for error in exc.errors():
            field = str(error["loc"][0]) if error.get("loc") else ""
            if field in AppSettings.model_fields and field not in defaults:
                log.warning(
                    "ignoring invalid setting",
                    variable=f"{PREFIX}{field.upper()}",
                    problem=error_message(error),
                )
                defaults[field] = AppSettings.model_fields[field].get_default(
                    call_default_factory=True
                )
    try:
        return AppSettings(**defaults, **given)
    except ValidationError as exc:  # cannot happen with valid defaults; stay up regardless
        log.warning("ignoring invalid settings", problem=describe_error(exc))
        return AppSettings.model_construct(**given)


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
    otel: bool | None = None,
    meter_provider: Any = None,
    stamp_application_name: bool | None = None,
) -> PoolStats:
    """Attach pool metrics to ``engine`` (sync or async); idempotent; returns its stats."""
    sync = sync_engine(engine)
    settings = load_settings(
        leak_threshold=leak_threshold,
        peak_window=peak_window,
        push_url=push_url,
        push_interval=push_interval,
        app=app,
        otel=otel,
        stamp_application_name=stamp_application_name,
    )
    bounds = DEFAULT_BUCKETS if buckets is None else validate_buckets(buckets)
    if name is not None and (not name or len(name) > 200):
        raise ValueError("name must be 1..200 characters")
    # A meter_provider asks for OpenTelemetry by itself; otel=False still says no.
    use_otel = settings.otel if otel is not None or meter_provider is None else True
    bridge = (
        _otel_module(explicit=otel is not None or meter_provider is not None) if use_otel else None
    )
    with instrumented.lock:
        existing = instrumented.lookup(sync)
        if existing is not None and existing.automatic:
            existing.automatic = False
            if not _same_options(existing.stats, name, settings, bounds):
                # `run` got there first with the environment's options: the app's own win.
                instrumented.remove(sync)
                existing.wiring.detach()
                existing = None
        if existing is not None:
            inst = existing
        else:
            unique = instrumented.unique_name(name or default_name(sync))
            # A dropped engine of this name carries on, with the same options.
            stats = instrumented.claim(
                unique, lambda old: _same_options(old, None, settings, bounds)
            ) or PoolStats(
                unique,
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
    if bridge is not None:
        bridge.attach(inst, meter_provider)
    target = REGISTRY if registry is _DEFAULT else registry
    runtime.started(settings, target)
    embedded.check_multiprocess_mode(pushing=bool(settings.push_url), registered=target is REGISTRY)
    log.debug("pool instrumented", pool=inst.stats.name)
    return inst.stats


def instrument_automatically(engine: Engine) -> None:
    """Instrument a new engine with the environment's options unless it already is (``run``)."""
    if instrumented.lookup(engine) is not None:
        return
    instrument(engine)
    inst = instrumented.lookup(engine)
    if inst is not None:
        inst.automatic = True


def _same_options(
    stats: PoolStats, name: str | None, settings: AppSettings, bounds: tuple[float, ...]
) -> bool:
    return (
        (name is None or name == stats.name)
        and settings.leak_threshold == stats.leak_threshold
        and settings.peak_window == stats.peak_window
        and bounds == stats.wait.bounds
    )


def _otel_module(*, explicit: bool) -> Any:
    """The OpenTelemetry bridge, or None when the environment asked for it in vain."""
    try:
        # Lazily: opentelemetry-api is an optional extra, never imported unless asked for.
        from sqlalchemy_pool_exporter.instrumentation import otel
    except ImportError:
        message = "otel needs opentelemetry-api: pip install 'sqlalchemy-pool-exporter[otel]'"
        if explicit:
            raise ImportError(message) from None
        # POOL_EXPORTER_OTEL=true must not take the app down: say so, carry on without.
        log.error("ignoring POOL_EXPORTER_OTEL", error=message)
        return None
    return otel


def check_options(**options: Any) -> None:
    """TypeError for a keyword ``instrument()`` does not take (helpers that call it later)."""
    inspect.signature(instrument).bind(None, **options)


def uninstrument(engine: Any) -> bool:
    """Detach the exporter from ``engine``; returns False if it was not instrumented."""
    inst = instrumented.remove(sync_engine(engine))
    if inst is None:
        return False
    inst.wiring.detach()
    attribution.detach(sync_engine(engine))
    return True
