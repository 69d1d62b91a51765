"""Read-side views of the aggregator: metric items for the collector (``/api/pools`` is
:mod:`~sqlalchemy_pool_exporter.sidecar.api`).

Items are built under the aggregator's lock from state kept up to date at push time, so a
read costs one pass over the (app, pool) groups — plus one over live processes for the
max gauges and per-process series.

Per-process output (``--per-process``) labels each live process's own values with
``process="host/pid"`` *instead of* the aggregated series, and puts what retired
processes reached under ``process="retired"`` (counters and histograms only), so
``sum by (app, pool)`` of any counter is still the exact total and nothing is counted
twice.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy_pool_exporter.exposition import PoolItem
from sqlalchemy_pool_exporter.protocol.records import PoolData
from sqlalchemy_pool_exporter.sidecar.aggregator import Aggregator, Group

RETIRED = "retired"


def _hist_dicts(data: PoolData) -> dict[str, Any]:
    return {
        name: {"buckets": list(h.buckets), "counts": h.counts, "sum": h.sum, "count": h.count}
        for name, h in data.histograms.items()
    }


def group_item(group: Group) -> dict[str, Any]:
    """Aggregated (app, pool) in snapshot form."""
    return {
        "info": group.info,
        "gauges": group.gauges(),
        "counters": dict(group.total.counters),
        "histograms": group.total.histogram_dicts(),
    }


def aggregated_items(agg: Aggregator) -> tuple[list[PoolItem], list[tuple[str, str, int]]]:
    """Items labelled (app, pool) and the live process count of each pool."""
    with agg.lock:
        groups = sorted(agg.groups.values(), key=lambda g: (g.app, g.pool))
        items: list[PoolItem] = [((g.app, g.pool), group_item(g)) for g in groups]
        counts = [(g.app, g.pool, len(g.members)) for g in groups]
    return items, counts


def per_process_items(agg: Aggregator) -> tuple[list[PoolItem], list[tuple[str, str, int]]]:
    """Items labelled (app, pool, process): live processes plus ``retired``."""
    items: list[PoolItem] = []
    with agg.lock:
        groups = sorted(agg.groups.values(), key=lambda g: (g.app, g.pool))
        for g in groups:
            for instance, data in g.members.items():
                label = agg.processes[instance].push.process
                items.append(
                    (
                        (g.app, g.pool, label),
                        {
                            "info": data.info,
                            "gauges": data.gauges,
                            "counters": data.counters,
                            "histograms": _hist_dicts(data),
                        },
                    )
                )
            retired_gauges: dict[str, Any] = {"checked_out": 0, "idle": 0}
            items.append(
                (
                    (g.app, g.pool, RETIRED),
                    {
                        "info": {},
                        "gauges": retired_gauges,
                        "counters": dict(g.retired.counters),
                        "histograms": g.retired.histogram_dicts(),
                    },
                )
            )
        counts = [(g.app, g.pool, len(g.members)) for g in groups]
    return items, counts
