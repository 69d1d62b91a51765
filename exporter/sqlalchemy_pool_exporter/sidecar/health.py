"""The sidecar's bounds as metrics: limit hits, open connections, groups, state held.

Every limit the sidecar enforces is visible in ``/metrics`` (names and help in the
metric catalog): how often it was hit (``pool_exporter_limit_hits_total{limit}``, see
:mod:`~sqlalchemy_pool_exporter.sidecar.limits`), and how close to it the sidecar is
now — open connections per listener, (app, pool) groups kept and dropped, push bytes
held as live state, and whether per-process output is over its series ceiling.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client.core import Metric
from prometheus_client.registry import Collector

from sqlalchemy_pool_exporter.exposition import family
from sqlalchemy_pool_exporter.protocol.catalog import metric
from sqlalchemy_pool_exporter.sidecar.aggregator import Aggregator
from sqlalchemy_pool_exporter.sidecar.ceiling import SeriesCeiling
from sqlalchemy_pool_exporter.sidecar.limits import LimitHits, StateBytes


class HealthCollector(Collector):
    """``pool_exporter_*`` series of the sidecar's limits."""

    def __init__(
        self,
        hits: LimitHits,
        aggregator: Aggregator,
        state: StateBytes,
        ceiling: SeriesCeiling,
        connections: Callable[[], dict[str, int]],
    ) -> None:
        self.hits = hits
        self.aggregator = aggregator
        self.state = state
        self.ceiling = ceiling
        self.connections = connections

    def collect(self) -> Iterator[Metric]:
        """Build the families from the current counts."""
        agg = self.aggregator
        counts = self.hits.snapshot()
        counts["retired_pools"] += agg.tombstones.forgotten
        hits = family(metric("pool_exporter_limit_hits"), ())
        for limit, n in counts.items():
            hits.add_metric([limit], n)
        yield hits
        open_connections = family(metric("pool_exporter_connections"), ())
        for listener, n in self.connections().items():
            open_connections.add_metric([listener], n)
        yield open_connections
        with agg.lock:
            groups, dropped = len(agg.groups), agg.groups_dropped_total
        for name, value in (
            ("pool_exporter_groups", groups),
            ("pool_exporter_groups_dropped", dropped),
            ("pool_exporter_state_bytes", self.state.total),
            ("pool_exporter_per_process_limited", int(self.ceiling.limited)),
        ):
            own = family(metric(name), ())
            own.add_metric([], value)
            yield own
