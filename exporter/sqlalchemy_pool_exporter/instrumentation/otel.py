"""OpenTelemetry: the same pool stats through the OpenTelemetry Metrics API.

``instrument(engine, otel=True)`` (or ``POOL_EXPORTER_OTEL=true``) attaches the engine
to a :class:`Bridge`: one per MeterProvider (the global one, or ``meter_provider=``),
holding one instrument per pool row of the catalog. Rows the semantic conventions for
database client connection pools name are reported under their name, unit and attributes
(``db.client.connection.count`` with ``db.client.connection.state`` = ``used`` |
``idle``, ``…max``, ``…pending_requests``, ``…timeouts``, ``…wait_time`` …); every other
row as ``sqlalchemy.pool.<name>``; the mapping is the catalog's
(:func:`~sqlalchemy_pool_exporter.protocol.catalog.otel_instrument`). Every instrument
carries ``db.client.connection.pool.name`` (the ``pool`` label).

Nothing here runs on the checkout path. Gauges and counters are *observable*
instruments: their callbacks read the same snapshot the Prometheus collector reads
(:func:`~sqlalchemy_pool_exporter.instrumentation.snapshot.pool_snapshot`), taken once
per collection — by the first callback of each collection cycle, whichever that is.

Histograms have no observable form in the API and no way to take pre-aggregated
buckets (the Python SDK has no metric producer either). Recording each checkout's wait
and use on the hot path is out of the question: one SDK ``Histogram.record()`` costs
about what a whole bare checkout+checkin does (21.8 µs against 22.0 µs, measured by
``benchmarks/overhead.py --processes 3`` on a loaded shared 2-core machine), so two per
cycle would triple it, against a budget of 1 µs. So the histograms are *replayed* when
a collection takes its snapshot: the growth of each bucket since the last collection is
recorded as representative values inside that bucket
(:mod:`~sqlalchemy_pool_exporter.instrumentation.replay`), into synchronous histograms
advised to use the exporter's bucket bounds. Counts, bucket counts and sums come out
exact; the cost, one ``record()`` per wait and per use (40.6 µs per checkout+checkin on
that machine), moves from the request to the exporting thread, and a collection spends
at most :data:`REPLAY_SECONDS` on it (the rest is carried to the next one).
"""

from __future__ import annotations

import functools
import math
import os
import threading
import time
import weakref
from collections.abc import Iterable
from typing import Any

from opentelemetry import metrics
from opentelemetry.metrics import CallbackOptions, Meter, Observation

from sqlalchemy_pool_exporter import __version__
from sqlalchemy_pool_exporter.instrumentation import registry
from sqlalchemy_pool_exporter.instrumentation.histogram import DEFAULT_BUCKETS
from sqlalchemy_pool_exporter.instrumentation.registry import Instrumentation
from sqlalchemy_pool_exporter.instrumentation.replay import Cursor, replay
from sqlalchemy_pool_exporter.instrumentation.snapshot import pool_snapshot
from sqlalchemy_pool_exporter.instrumentation.stats import PoolStats
from sqlalchemy_pool_exporter.logs import get_logger
from sqlalchemy_pool_exporter.protocol.catalog import (
    INFO_LABELS,
    OTEL_IDLE_MIN,
    OTEL_LABELS,
    OTEL_POOL_ATTRIBUTE,
    OTEL_SEMCONV,
    POOL_METRICS,
    Metric,
    otel_instrument,
)

log = get_logger(__name__)
#: The instrumentation scope every instrument is created in.
SCOPE = "sqlalchemy_pool_exporter"
#: Longest a collection spends replaying histograms; the rest waits for the next one.
REPLAY_SECONDS = 1.0
_SECTION = {"gauge": "gauges", "counter": "counters", "histogram": "histograms"}
#: A callback index above every real one: the first callback takes a snapshot.
_NEVER = 1 << 30
#: (pool attributes, pool snapshot) of one collection.
_Pool = tuple[dict[str, str], dict[str, Any]]


def _attributes(row: Metric, label_values: tuple[str, ...]) -> dict[str, str]:
    """The row's own labels as attributes, in the conventions' terms where they have some."""
    out = {}
    for label, value in zip(row.labels, label_values, strict=True):
        if row.name in OTEL_SEMCONV and label in OTEL_LABELS:
            attribute, values = OTEL_LABELS[label]
            out[attribute] = values.get(value, value)
        else:
            out[label] = value
    return out


class Bridge:
    """The instruments of one MeterProvider, observing every pool attached to it."""

    def __init__(self, meter: Meter) -> None:
        self._members: weakref.WeakSet[Instrumentation] = weakref.WeakSet()
        self._lock = threading.Lock()
        self._pools: list[_Pool] = []
        self._last_index = _NEVER
        self._warned_at = -math.inf
        # By stats, not instrumentation: a new engine may carry on a dropped one's stats,
        # and its histograms must go on from where they were replayed to.
        self._cursors: weakref.WeakKeyDictionary[PoolStats, dict[str, Cursor]] = (
            weakref.WeakKeyDictionary()
        )
        self._histograms: list[tuple[str, Any]] = []
        index = 0
        for row in POOL_METRICS:
            name, unit = otel_instrument(row)
            if row.kind == "histogram":
                histogram = meter.create_histogram(
                    name,
                    unit=unit,
                    description=row.help,
                    explicit_bucket_boundaries_advisory=list(DEFAULT_BUCKETS),
                )
                self._histograms.append((row.fields[0][1], histogram))
                continue
            self._observe(meter, row.kind, row.across, name, unit, row.help, index, row)
            index += 1
        idle_min, unit = OTEL_IDLE_MIN
        description = "The minimum number of idle open connections allowed (none)."
        self._observe(meter, "gauge", "sum", idle_min, unit, description, index, None)

    def _observe(
        self,
        meter: Meter,
        kind: str,
        across: str,
        name: str,
        unit: str,
        description: str,
        index: int,
        row: Metric | None,
    ) -> None:
        callback = functools.partial(self._callback, index, row)
        if kind == "counter":
            meter.create_observable_counter(name, [callback], unit, description)
        elif kind == "gauge" and across in ("sum", "limit"):
            # Additive across pools and processes: the API's up-down counter.
            meter.create_observable_up_down_counter(name, [callback], unit, description)
        else:
            meter.create_observable_gauge(name, [callback], unit, description)

    def add(self, inst: Instrumentation) -> None:
        """Report ``inst``'s pool through this provider from the next collection on."""
        self._members.add(inst)

    def after_fork(self) -> None:
        """In a forked child: a fresh lock, and histograms replayed from zero (stats restarted)."""
        # The parent's lock may have been held by a thread that does not exist here.
        self._lock = threading.Lock()
        self._cursors = weakref.WeakKeyDictionary()
        self._pools = []
        self._last_index = _NEVER

    def _callback(self, index: int, row: Metric | None, options: CallbackOptions) -> list[Any]:
        try:
            with self._lock:
                # Callbacks run in one order in every collection: coming back to an index
                # already served starts a new collection, which takes a new snapshot.
                if index <= self._last_index:
                    self._refresh()
                self._last_index = index
                pools = self._pools
            return list(_observations(row, pools))
        except Exception as exc:  # a broken read must not break the app's export
            registry.reporter.report("otel", exc)
            return []

    def _refresh(self) -> None:
        """Snapshot every attached pool, and replay the histograms' growth since last time."""
        pools: list[_Pool] = []
        deadline = time.perf_counter() + REPLAY_SECONDS
        left = 0
        for inst in registry.instrumentations():
            if inst not in self._members:
                continue
            snap = pool_snapshot(inst, top=0)
            if snap is None:
                continue
            attributes = {OTEL_POOL_ATTRIBUTE: inst.stats.name}
            pools.append((attributes, snap))
            cursors = self._cursors.setdefault(inst.stats, {})
            for field, histogram in self._histograms:
                record = functools.partial(_record, histogram, attributes)
                data = snap["histograms"][field]
                cursors[field], behind = replay(record, data, cursors.get(field), deadline)
                left += behind
        self._pools = pools
        now = time.monotonic()
        if left and now - self._warned_at > 60:
            self._warned_at = now
            log.warning("OpenTelemetry histograms behind", carried_to_next_collection=left)


def _record(histogram: Any, attributes: dict[str, str], value: float) -> None:
    histogram.record(value, attributes)


def _observations(row: Metric | None, pools: list[_Pool]) -> Iterable[Observation]:
    """What one instrument observes in every pool of a collection."""
    for attributes, snap in pools:
        if row is None:  # idle.min: SQLAlchemy's pools keep no minimum open
            if snap["gauges"].get("size") is not None:
                yield Observation(0, attributes)
        elif row.kind == "info":
            info = snap.get("info") or {}
            yield Observation(1, attributes | {k: str(info.get(k, "")) for k in INFO_LABELS})
        else:
            section = snap[_SECTION[row.kind]]
            for label_values, field in row.fields:
                value = section.get(field)
                if value is not None:
                    yield Observation(value, attributes | _attributes(row, label_values))


_lock = threading.Lock()
#: id(provider) -> (provider, its bridge); a provider lives as long as the process.
_bridges: dict[int, tuple[Any, Bridge]] = {}


def attach(inst: Instrumentation, meter_provider: Any = None) -> None:
    """Report ``inst`` through ``meter_provider`` (default: the global MeterProvider)."""
    provider = metrics.get_meter_provider() if meter_provider is None else meter_provider
    with _lock:
        entry = _bridges.get(id(provider))
        if entry is None or entry[0] is not provider:
            bridge = Bridge(provider.get_meter(SCOPE, __version__))
            entry = _bridges[id(provider)] = (provider, bridge)
    entry[1].add(inst)


def _after_fork_child() -> None:
    global _lock
    _lock = threading.Lock()
    for _, bridge in _bridges.values():
        bridge.after_fork()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_child)
