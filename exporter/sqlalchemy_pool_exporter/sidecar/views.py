"""Read-side views of the aggregator: metric items for the collector, and ``/api/pools``.

Both are built under the aggregator's lock from state kept up to date at push time, so a
read costs one pass over the (app, pool) groups — plus one over live processes for the
max gauges, per-process series and the API's held connections.

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


def api_document(agg: Aggregator, *, top: int = 20) -> dict[str, Any]:
    """``/api/pools``: every live process, and every pool with its held connections."""
    with agg.lock:
        now = agg.clock()
        processes = [
            {
                "process": p.push.process,
                "instance": p.push.instance,
                "app": p.push.app,
                "host": p.push.host,
                "pid": p.push.pid,
                "seq": p.push.seq,
                "interval": p.push.interval,
                "last_push_age_seconds": round(now - p.last_seen, 3),
                "pools": sorted(p.push.pools),
            }
            for p in sorted(agg.processes.values(), key=lambda p: (p.push.app, p.push.process))
        ]
        pools = [
            _api_pool(agg, g, top)
            for g in sorted(agg.groups.values(), key=lambda g: (g.app, g.pool))
        ]
    return {"processes": processes, "pools": pools}


def _api_pool(agg: Aggregator, group: Group, top: int) -> dict[str, Any]:
    held: list[dict[str, Any]] = []
    per_process = []
    for instance, data in group.members.items():
        label = agg.processes[instance].push.process
        per_process.append(
            {
                "process": label,
                "instance": instance,
                "gauges": data.gauges,
                "counters": data.counters,
            }
        )
        held.extend({"process": label, **h} for h in data.held)
    held.sort(key=lambda h: -h["age_seconds"])
    sites: dict[str, dict[str, Any]] = {}
    for h in held:
        site = sites.setdefault(
            h["site"], {"site": h["site"], "held": 0, "leaked": 0, "oldest_seconds": 0.0}
        )
        site["held"] += 1
        site["leaked"] += int(h["leaked"])
        site["oldest_seconds"] = max(site["oldest_seconds"], h["age_seconds"])
    return {
        "app": group.app,
        "pool": group.pool,
        "processes": len(group.members),
        "info": group.info,
        "gauges": group.gauges(),
        "counters": dict(group.total.counters),
        "held": held[:top],
        "sites": sorted(sites.values(), key=lambda s: (-s["held"], -s["oldest_seconds"]))[:top],
        "per_process": sorted(per_process, key=lambda p: p["process"]),
    }
