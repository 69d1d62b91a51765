"""Embedded exposition: this process's pools in prometheus_client's registry.

:class:`PoolCollector` is registered by ``instrument()`` into the default registry (or
the one passed), so an app that already serves ``/metrics`` gets pool metrics for free.
Families are built from live stats at every scrape. :func:`start_http_server` serves a
registry on its own port for apps that have no ``/metrics`` of their own.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import prometheus_client
from prometheus_client.core import Metric
from prometheus_client.registry import Collector

from sqlalchemy_pool_exporter.exposition import SeriesCache, family, pool_families
from sqlalchemy_pool_exporter.instrumentation import registry
from sqlalchemy_pool_exporter.instrumentation.snapshot import pool_snapshot
from sqlalchemy_pool_exporter.protocol.catalog import metric


class PoolCollector(Collector):
    """prometheus_client collector for every pool instrumented in this process."""

    def __init__(self) -> None:
        # A process's pools live as long as it does: their labels are built once.
        self._series = SeriesCache()

    def collect(self) -> Iterator[Metric]:
        """Build the pool families labelled ``pool`` from current stats."""
        items = []
        for inst in registry.instrumentations():
            try:
                snap = pool_snapshot(inst, top=0)
            except Exception as exc:  # one broken pool must not break the scrape
                registry.reporter.report("collect", exc)
                continue
            if snap is not None:
                items.append(((inst.stats.name,), snap))
        yield from pool_families(("pool",), items, self._series)
        errors = family(metric("pool_exporter_errors"), ())
        for where, count in sorted(registry.reporter.counts.items()):
            errors.add_metric([where], count)
        yield errors


def start_http_server(
    port: int = 9187, addr: str = "0.0.0.0", registry: Any = None
) -> tuple[Any, Any]:
    """Serve ``registry`` (default: the global one) on ``addr:port``; returns (server, thread)."""
    reg = prometheus_client.REGISTRY if registry is None else registry
    return prometheus_client.start_http_server(port, addr=addr, registry=reg)  # type: ignore[no-any-return]
