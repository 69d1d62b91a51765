"""The sidecar's prometheus_client collector: aggregated pools plus its own health.

Pool families come from :func:`~sqlalchemy_pool_exporter.exposition.pool_families`
(every name and help text from the metric catalog) with labels ``app, pool`` — or
``app, pool, process`` with per-process output — followed by ``sqlalchemy_pool_processes`` and the
``pool_exporter_*`` self-metrics. Every scrape first expires silent processes, so
``/metrics`` never shows a process that has been gone longer than its expiry time. With
a state directory, what a scrape is about to show is saved first
(:meth:`~sqlalchemy_pool_exporter.sidecar.keeper.StateKeeper.persist`), so no value
Prometheus ever scraped can be lost by a restart of the sidecar.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

from prometheus_client.core import Metric
from prometheus_client.registry import Collector

from sqlalchemy_pool_exporter.exposition import SeriesCache, family, pool_families
from sqlalchemy_pool_exporter.protocol.catalog import metric
from sqlalchemy_pool_exporter.protocol.records import REASONS
from sqlalchemy_pool_exporter.sidecar.aggregator import Aggregator
from sqlalchemy_pool_exporter.sidecar.keeper import StateKeeper
from sqlalchemy_pool_exporter.sidecar.views import aggregated_items, per_process_items

RESULTS = ("accepted", "rejected")


class PushCounters:
    """Counts of pushes by result and of rejections by reason."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.results = dict.fromkeys(RESULTS, 0)
        self.rejected = dict.fromkeys(REASONS, 0)

    def accepted(self) -> None:
        """Count one accepted push."""
        with self._lock:
            self.results["accepted"] += 1

    def reject(self, reason: str) -> None:
        """Count one rejected push."""
        with self._lock:
            self.results["rejected"] += 1
            self.rejected[reason] = self.rejected.get(reason, 0) + 1


class SidecarCollector(Collector):
    """Pool families aggregated across processes, and the exporter's own counters."""

    def __init__(
        self,
        aggregator: Aggregator,
        counters: PushCounters,
        *,
        per_process: bool = False,
        ceiling: Any = None,
        keeper: StateKeeper | None = None,
    ) -> None:
        self.aggregator = aggregator
        self.counters = counters
        self.per_process = per_process
        self.ceiling = ceiling  # a SeriesCeiling: per-process output only while it allows
        self.keeper = keeper
        # (app, pool) pairs stay for the sidecar's life: their labels are built once.
        # Per-process labels come and go with worker processes, so they are not kept.
        self._series = SeriesCache()

    def collect(self) -> Iterator[Metric]:
        """Build every family from the aggregator's current state."""
        agg = self.aggregator
        agg.expire()
        per_process = self.per_process and (self.ceiling is None or self.ceiling.allows(agg))
        view = per_process_items if per_process else aggregated_items
        if self.keeper is not None:
            items, counts = self.keeper.persist(lambda: view(agg))
        else:
            items, counts = view(agg)
        if per_process:
            families = pool_families(("app", "pool", "process"), items)
        else:
            families = pool_families(("app", "pool"), items, self._series)
        yield from families
        processes = family(metric("sqlalchemy_pool_processes"), ("app", "pool"))
        for app, pool, n in counts:
            processes.add_metric([app, pool], n)
        yield processes
        yield from self._self_metrics()

    def _self_metrics(self) -> Iterator[Metric]:
        agg = self.aggregator
        pushes = family(metric("pool_exporter_pushes"), ())
        rejected = family(metric("pool_exporter_push_rejected"), ())
        with self.counters._lock:
            for result, n in self.counters.results.items():
                pushes.add_metric([result], n)
            for reason, n in self.counters.rejected.items():
                rejected.add_metric([reason], n)
        yield pushes
        yield rejected
        for name, value in (
            ("pool_exporter_processes", agg.live_count()),
            ("pool_exporter_processes_expired", agg.expired_total),
            ("pool_exporter_pool_resets", agg.resets_total),
        ):
            own = family(metric(name), ())
            own.add_metric([], value)
            yield own
