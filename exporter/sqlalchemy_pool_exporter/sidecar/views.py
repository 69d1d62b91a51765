"""Read-side views of the aggregator: metric items for the collector (``/api/pools`` is
:mod:`~sqlalchemy_pool_exporter.sidecar.api`).

Items are built under the aggregator's lock from state kept up to date at push time, so a
read costs one pass over the (app, pool) groups — plus one over live processes for the
max gauges and per-process series.

Per-process output (``--per-process``) labels each process's own values with
``process="host/pid"`` *instead of* the aggregated series. A process that retires keeps
its own series, frozen — counters and histograms at their last values, no gauges and no
info — for the retention period, and then they go. Nothing ever moves from one series
into another, so ``sum by (app, pool)`` of ``increase()`` or ``rate()`` is exact.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy_pool_exporter.exposition import PoolItem
from sqlalchemy_pool_exporter.protocol.records import PoolData
from sqlalchemy_pool_exporter.sidecar.aggregator import Aggregator
from sqlalchemy_pool_exporter.sidecar.group import Group


def group_item(group: Group) -> dict[str, Any]:
    """Aggregated (app, pool) in snapshot form."""
    return {
        "info": group.info,
        "gauges": group.gauges(),
        "counters": dict(group.ledger.total.counters),
        "histograms": group.ledger.histograms(),
    }


def aggregated_items(agg: Aggregator) -> tuple[list[PoolItem], list[tuple[str, str, int]]]:
    """Items labelled (app, pool) and the live process count of each pool."""
    with agg.lock:
        groups = sorted(agg.groups.values(), key=lambda g: (g.app, g.pool))
        items: list[PoolItem] = [((g.app, g.pool), group_item(g)) for g in groups]
        counts = [(g.app, g.pool, len(g.members)) for g in groups]
    return items, counts


def per_process_items(agg: Aggregator) -> tuple[list[PoolItem], list[tuple[str, str, int]]]:
    """Items labelled (app, pool, process): live processes, and retired ones kept frozen."""
    items: list[PoolItem] = []
    with agg.lock:
        groups = sorted(agg.groups.values(), key=lambda g: (g.app, g.pool))
        for g in groups:
            # The latest push of each label's live process gives its gauges and info (two
            # live processes share a label only until the older one expires).
            live: dict[str, tuple[float, PoolData]] = {}
            for instance, data in g.members.items():
                proc = agg.processes[instance]
                label = proc.push.process
                if label not in live or proc.last_seen >= live[label][0]:
                    live[label] = (proc.last_seen, data)
            for label, ledger in sorted((g.series or {}).items()):
                now = live[label][1] if label in live else None
                items.append(
                    (
                        (g.app, g.pool, label),
                        {
                            "info": now.info if now is not None else {},
                            "gauges": now.gauges if now is not None else {},
                            "counters": dict(ledger.total.counters),
                            "histograms": ledger.histograms(),
                        },
                    )
                )
        counts = [(g.app, g.pool, len(g.members)) for g in groups]
    return items, counts
