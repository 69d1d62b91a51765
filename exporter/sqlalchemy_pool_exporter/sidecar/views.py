"""Read-side views of the aggregator: metric items for the collector, and ``/api/pools``.

Both are built under the aggregator's lock from state kept up to date at push time, so a
read costs one pass over the (app, pool) groups — plus one over live processes for the
max gauges, per-process series and the API's held connections.

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
        "counters": dict(group.ledger.total.counters),
        "held": held[:top],
        "sites": sorted(sites.values(), key=lambda s: (-s["held"], -s["oldest_seconds"]))[:top],
        "per_process": sorted(per_process, key=lambda p: p["process"]),
    }
