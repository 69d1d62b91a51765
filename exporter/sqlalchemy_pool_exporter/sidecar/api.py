"""``/api/pools``: every live process and every (app, pool) with its held connections.

It names hosts, pids, databases, code (checkout sites) and threads, so where it is
served is a setting (``api_listen``): the loopback push listener by default, the
all-interfaces metrics listener only when asked, or nowhere. Instance ids — what a push
names its process by — are left out unless the request asks for them
(``?instances=1``).

Its size is bounded: per pool, the :data:`TOP` longest-held connections and busiest
checkout sites, and the :data:`TOP_PROCESSES` processes with the most connections
checked out (``per_process_omitted`` counts the rest; ``processes`` lists them all).
Under the aggregator's lock only shallow copies are taken (the latest push of each
process is never changed once accepted, only replaced); the document is built and
encoded afterwards, pool by pool, so even a thousand processes with sixty-four pools
each never hold pushes up for more than a few milliseconds at a time.
"""

from __future__ import annotations

import heapq
import json
from collections.abc import Callable
from typing import Any

from sqlalchemy_pool_exporter.protocol.records import PoolData, Push
from sqlalchemy_pool_exporter.sidecar.aggregator import Aggregator

#: Held connections and checkout sites listed per pool.
TOP = 20
#: Processes listed per pool (those with the most connections checked out).
TOP_PROCESSES = 100
#: Processes encoded at a time between two pauses.
CHUNK = 100

_Pool = tuple[str, str, dict[str, str], dict[str, Any], dict[str, int], dict[str, PoolData]]


def _gather(agg: Aggregator) -> tuple[dict[str, tuple[Push, float]], list[_Pool]]:
    # Only shallow copies under the lock, taken group by group: pushes wait for it.
    with agg.lock:
        now = agg.clock()
        processes = {i: (p.push, now - p.last_seen) for i, p in agg.processes.items()}
        groups = list(agg.groups.values())
    pools = []
    for g in groups:
        with agg.lock:
            pools.append(
                (g.app, g.pool, g.info, g.gauges(), dict(g.ledger.total.counters), dict(g.members))
            )
    return processes, pools


def _process(push: Push, age: float, instances: bool) -> dict[str, Any]:
    age = round(age, 3)
    doc: dict[str, Any] = {"process": push.process}
    if instances:
        doc["instance"] = push.instance
    doc.update(
        app=push.app,
        host=push.host,
        pid=push.pid,
        seq=push.seq,
        interval=push.interval,
        last_push_age_seconds=age,
        pools=sorted(push.pools),
    )
    return doc


def _pool(pool: _Pool, processes: dict[str, tuple[Push, float]], instances: bool) -> dict[str, Any]:
    app, name, info, gauges, counters, members = pool
    labelled = [(processes[i][0].process, i, d) for i, d in members.items() if i in processes]
    # The processes holding the most connections, listed by name.
    busiest = heapq.nsmallest(
        TOP_PROCESSES, labelled, key=lambda m: (-m[2].gauges["checked_out"], m[0])
    )
    per_process = []
    for label, instance, data in sorted(busiest, key=lambda m: m[0]):
        entry: dict[str, Any] = {"process": label}
        if instances:
            entry["instance"] = instance
        entry.update(gauges=data.gauges, counters=data.counters)
        per_process.append(entry)
    sites: dict[str, dict[str, Any]] = {}
    for _, _, data in labelled:
        for h in data.held:
            site = sites.get(h["site"])
            if site is None:
                site = sites[h["site"]] = {
                    "site": h["site"],
                    "held": 0,
                    "leaked": 0,
                    "oldest_seconds": 0.0,
                }
            site["held"] += 1
            site["leaked"] += int(h["leaked"])
            site["oldest_seconds"] = max(site["oldest_seconds"], h["age_seconds"])
    oldest = heapq.nlargest(
        TOP,
        ((h["age_seconds"], label, h) for label, _, data in labelled for h in data.held),
        key=lambda x: x[0],
    )
    return {
        "app": app,
        "pool": name,
        "processes": len(members),
        "info": info,
        "gauges": gauges,
        "counters": counters,
        "held": [{"process": label, **h} for _, label, h in oldest],
        "sites": sorted(sites.values(), key=lambda s: (-s["held"], -s["oldest_seconds"]))[:TOP],
        "per_process": per_process,
        "per_process_omitted": len(members) - len(per_process),
    }


def api_document(agg: Aggregator, *, instances: bool = False) -> dict[str, Any]:
    """The ``/api/pools`` document (with instance ids only if ``instances``)."""
    processes, pools = _gather(agg)
    ordered = sorted(processes.values(), key=lambda p: (p[0].app, p[0].process))
    return {
        "processes": [_process(push, age, instances) for push, age in ordered],
        "pools": [
            _pool(p, processes, instances) for p in sorted(pools, key=lambda p: (p[0], p[1]))
        ],
    }


def api_json(
    agg: Aggregator, *, instances: bool = False, pause: Callable[[], None] = lambda: None
) -> bytes:
    """``/api/pools`` as JSON bytes, encoded pool by pool with ``pause()`` before each."""
    processes, pools = _gather(agg)
    ordered = sorted(processes.values(), key=lambda p: (p[0].app, p[0].process))
    encoded = []
    for start in range(0, len(ordered), CHUNK):
        pause()
        chunk = [_process(push, age, instances) for push, age in ordered[start : start + CHUNK]]
        encoded.append(_dumps(chunk)[1:-1])
    parts = [b'{"processes":[', b",".join(e for e in encoded if e), b'],"pools":[']
    encoded = []
    for pool in sorted(pools, key=lambda p: (p[0], p[1])):
        pause()
        encoded.append(_dumps(_pool(pool, processes, instances)))
    parts += [b",".join(encoded), b"]}"]
    return b"".join(parts)


def _dumps(doc: Any) -> bytes:
    return json.dumps(doc, separators=(",", ":")).encode()
