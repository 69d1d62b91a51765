"""Builders of push payloads in the wire form (schema 1) of the protocol."""

from __future__ import annotations

import copy
import json
from typing import Any

from sqlalchemy_pool_exporter.instrumentation.histogram import DEFAULT_BUCKETS
from sqlalchemy_pool_exporter.protocol.catalog import COUNTER_FIELDS as COUNTER_NAMES
from sqlalchemy_pool_exporter.protocol.catalog import HISTOGRAM_FIELDS as HISTOGRAM_NAMES

BUCKETS = list(DEFAULT_BUCKETS)


def histogram(
    per_bucket: list[int] | None = None,
    total: float | None = None,
    buckets: list[float] | None = None,
) -> dict[str, Any]:
    """A cumulative histogram from non-cumulative counts per bucket (+Inf last)."""
    bounds = list(buckets or BUCKETS)
    raw = list(per_bucket or [0] * (len(bounds) + 1))
    counts, running = [], 0
    for n in raw:
        running += n
        counts.append(running)
    return {
        "buckets": bounds,
        "counts": counts,
        "sum": float(total if total is not None else running),
        "count": running,
    }


def pool(
    *,
    checkouts: int = 0,
    counters: dict[str, int] | None = None,
    gauges: dict[str, Any] | None = None,
    hist: dict[str, Any] | None = None,
    held: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """One pool's snapshot; every counter 0 unless given; a bounded QueuePool's gauges."""
    c = dict.fromkeys(COUNTER_NAMES, 0)
    c["checkouts"] = checkouts
    c.update(counters or {})
    g: dict[str, Any] = {
        "checked_out": 0,
        "idle": 1,
        "pending": 0,
        "overflow": 0,
        "size": 5,
        "max_overflow": 10,
        "max_connections": 15,
        "utilization_ratio": 0.0,
        "peak_utilization_ratio": 0.0,
        "oldest_checkout_seconds": 0.0,
        "oldest_wait_seconds": 0.0,
        "leaked_connections": 0,
        "recycle_seconds": None,  # connections never recycled
    }
    g.update(gauges or {})
    h = {name: histogram() for name in HISTOGRAM_NAMES}
    if checkouts:
        h["wait_seconds"] = histogram([checkouts] + [0] * len(BUCKETS), total=checkouts * 0.0001)
    h.update(hist or {})
    return {
        "info": {
            "pool_class": "QueuePool",
            "dialect": "sqlite",
            "driver": "pysqlite",
            "database": "test.db",
            "host": "",
            "timeout_seconds": "30",
            "recycle_seconds": "-1",
            "pre_ping": "false",
        },
        "gauges": g,
        "counters": c,
        "histograms": h,
        "held": held or [],
    }


def payload(
    instance: str = "i-1",
    *,
    seq: int = 1,
    app: str = "shop",
    pools: dict[str, Any] | None = None,
    final: bool = False,
    interval: float = 5.0,
    pid: int = 100,
    host: str = "web-1",
    key: str | None = None,
) -> dict[str, Any]:
    """A whole push document (``key``: the process's secret, left out if None)."""
    doc: dict[str, Any] = {
        "schema": 1,
        "seq": seq,
        "interval": interval,
        "final": final,
        "sent_at": 1763712000.0,
        "process": {
            "instance": instance,
            "pid": pid,
            "host": host,
            "app": app,
            "started_at": 1763711000.0,
        },
        "pools": {"db": pool()} if pools is None else pools,
    }
    if key is not None:
        doc["process"]["key"] = key
    return doc


def encode(doc: Any) -> bytes:
    """JSON bytes of ``doc``."""
    return json.dumps(doc).encode()


def mutate(doc: dict[str, Any], path: list[Any], value: Any) -> dict[str, Any]:
    """A deep copy of ``doc`` with the item at ``path`` replaced (or deleted if ``...``)."""
    out = copy.deepcopy(doc)
    target = out
    for key in path[:-1]:
        target = target[key]
    if value is ...:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return out
