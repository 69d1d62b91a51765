"""Metric families built from pool snapshots: the one place metric names are spelled.

Embedded mode and the sidecar expose identical names, so both feed this module: the
embedded collector with this process's pools labelled ``pool``, the sidecar with
aggregated pools labelled ``app`` and ``pool`` (and ``process`` when per-process output
is on). Families are built fresh for every scrape; nothing here is stored.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

PoolItem = tuple[Sequence[str], dict[str, Any]]

# gauge key in the snapshot -> (metric name, help)
GAUGES: dict[str, tuple[str, str]] = {
    "size": ("sqlalchemy_pool_size", "Configured pool_size."),
    "max_overflow": ("sqlalchemy_pool_max_overflow", "Configured max_overflow."),
    "max_connections": (
        "sqlalchemy_pool_max_connections",
        "Hard limit pool_size + max_overflow; absent for unbounded pools.",
    ),
    "overflow": ("sqlalchemy_pool_overflow", "Overflow connections open now."),
    "pending": ("sqlalchemy_pool_pending", "Callers blocked waiting for a connection now."),
    "utilization_ratio": (
        "sqlalchemy_pool_utilization_ratio",
        "Checked-out connections / max_connections.",
    ),
    "peak_utilization_ratio": (
        "sqlalchemy_pool_peak_utilization_ratio",
        "Highest utilization within the last peak window.",
    ),
    "oldest_checkout_seconds": (
        "sqlalchemy_pool_oldest_checkout_seconds",
        "Age of the longest-held checked-out connection (0 if none).",
    ),
    "leaked_connections": (
        "sqlalchemy_pool_leaked_connections",
        "Checked-out connections held longer than the leak threshold.",
    ),
}

COUNTERS: dict[str, tuple[str, str]] = {
    "checkouts": ("sqlalchemy_pool_checkouts", "Successful checkouts."),
    "checkout_timeouts": (
        "sqlalchemy_pool_checkout_timeouts",
        "Checkouts that raised sqlalchemy.exc.TimeoutError (pool limit reached).",
    ),
    "connections_created": (
        "sqlalchemy_pool_connections_created",
        "New DBAPI connections opened.",
    ),
    "connect_errors": (
        "sqlalchemy_pool_connect_errors",
        "Failed attempts to open a DBAPI connection.",
    ),
    "connections_closed": (
        "sqlalchemy_pool_connections_closed",
        "DBAPI connections closed by the pool.",
    ),
    "leaks": ("sqlalchemy_pool_leaks", "Checkouts that crossed the leak threshold."),
    "gc_reclaimed": (
        "sqlalchemy_pool_gc_reclaimed",
        "Connections never returned by the app and reclaimed by the garbage collector.",
    ),
}

HISTOGRAMS: dict[str, tuple[str, str]] = {
    "wait_seconds": (
        "sqlalchemy_pool_wait_seconds",
        "Time from asking the pool for a connection to getting one (or timing out).",
    ),
    "use_seconds": (
        "sqlalchemy_pool_use_seconds",
        "Time a connection stayed checked out.",
    ),
    "connect_seconds": (
        "sqlalchemy_pool_connect_seconds",
        "Time to open a new DBAPI connection.",
    ),
}

INFO_LABELS = (
    "pool_class",
    "dialect",
    "driver",
    "database",
    "host",
    "timeout_seconds",
    "recycle_seconds",
    "pre_ping",
)


def format_le(bound: float) -> str:
    """Prometheus text for a bucket bound, as prometheus_client writes it."""
    return "+Inf" if math.isinf(bound) else repr(float(bound))


def pool_families(label_names: Sequence[str], items: Iterable[PoolItem]) -> list[Metric]:
    """Every SPEC §2 pool family for ``items`` (label values, pool snapshot)."""
    names = list(label_names)
    connections = GaugeMetricFamily(
        "sqlalchemy_pool_connections",
        "Connections in use (checked_out) or idle in the pool.",
        labels=[*names, "state"],
    )
    gauges: dict[str, GaugeMetricFamily] = {
        k: GaugeMetricFamily(n, h, labels=names) for k, (n, h) in GAUGES.items()
    }
    counters: dict[str, CounterMetricFamily] = {
        k: CounterMetricFamily(n, h, labels=names) for k, (n, h) in COUNTERS.items()
    }
    invalidations = CounterMetricFamily(
        "sqlalchemy_pool_invalidations",
        "Invalidated connections (hard: closed; soft: replaced at next checkout).",
        labels=[*names, "kind"],
    )
    histograms = {k: HistogramMetricFamily(n, h, labels=names) for k, (n, h) in HISTOGRAMS.items()}
    info = GaugeMetricFamily(
        "sqlalchemy_pool_info", "Static description of the pool.", labels=[*names, *INFO_LABELS]
    )
    for values, snap in items:
        labels = list(values)
        g = snap["gauges"]
        connections.add_metric([*labels, "checked_out"], g["checked_out"])
        connections.add_metric([*labels, "idle"], g["idle"])
        for key, gauge in gauges.items():
            value = g.get(key)
            if value is not None:
                gauge.add_metric(labels, value)
        c = snap["counters"]
        for key, counter in counters.items():
            counter.add_metric(labels, c[key])
        invalidations.add_metric([*labels, "hard"], c["invalidations_hard"])
        invalidations.add_metric([*labels, "soft"], c["invalidations_soft"])
        for key, histogram in histograms.items():
            h = snap["histograms"][key]
            bounds = [*h["buckets"], math.inf]
            histogram.add_metric(
                labels,
                [(format_le(b), n) for b, n in zip(bounds, h["counts"], strict=False)],
                h["sum"],
            )
        if snap.get("info"):
            info.add_metric([*labels, *(str(snap["info"].get(k, "")) for k in INFO_LABELS)], 1)
    return [
        connections,
        *gauges.values(),
        *counters.values(),
        invalidations,
        *histograms.values(),
        info,
    ]
