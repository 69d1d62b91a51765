"""The sidecar's prometheus_client collector: aggregated pools plus its own health.

Pool families come from :func:`exporter.families.pool_families` (the one place metric
names are spelled) with labels ``app, pool`` — or ``app, pool, process`` with
per-process output — followed by ``sqlalchemy_pool_processes`` and the
``pool_exporter_*`` self-metrics. Every scrape first expires silent processes, so
``/metrics`` never shows a process that has been gone longer than its expiry time.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from exporter.families import pool_families
from exporter.sidecar.aggregator import Aggregator
from exporter.sidecar.model import REASONS
from exporter.sidecar.views import RETIRED, aggregated_items, per_process_items

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

    def __init__(self, aggregator: Aggregator, counters: PushCounters, *,
                 per_process: bool = False) -> None:
        self.aggregator = aggregator
        self.counters = counters
        self.per_process = per_process

    def collect(self) -> Iterator[Metric]:
        """Build every family from the aggregator's current state."""
        agg = self.aggregator
        agg.expire()
        if self.per_process:
            items, counts = per_process_items(agg)
            families = pool_families(("app", "pool", "process"), items)
            # The retired pseudo-process has totals but no state now: drop its gauges.
            families[0].samples = [s for s in families[0].samples
                                   if s.labels.get("process") != RETIRED]
        else:
            items, counts = aggregated_items(agg)
            families = pool_families(("app", "pool"), items)
        yield from families
        processes = GaugeMetricFamily(
            "sqlalchemy_pool_processes", "Live processes reporting this pool.",
            labels=["app", "pool"],
        )
        for app, pool, n in counts:
            processes.add_metric([app, pool], n)
        yield processes
        yield from self._self_metrics()

    def _self_metrics(self) -> Iterator[Metric]:
        agg = self.aggregator
        pushes = CounterMetricFamily(
            "pool_exporter_pushes", "Pushes received, by result.", labels=["result"])
        rejected = CounterMetricFamily(
            "pool_exporter_push_rejected", "Pushes rejected, by reason.", labels=["reason"])
        with self.counters._lock:
            for result, n in self.counters.results.items():
                pushes.add_metric([result], n)
            for reason, n in self.counters.rejected.items():
                rejected.add_metric([reason], n)
        yield pushes
        yield rejected
        yield GaugeMetricFamily(
            "pool_exporter_processes", "Live processes pushing to this sidecar.",
            value=agg.live_count(),
        )
        yield CounterMetricFamily(
            "pool_exporter_processes_expired",
            "Processes retired because they stopped pushing.",
            value=agg.expired_total,
        )
        yield CounterMetricFamily(
            "pool_exporter_pool_resets",
            "Pools whose counters restarted from zero in a live process (a new pool, same name).",
            value=agg.resets_total,
        )
