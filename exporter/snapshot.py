"""The snapshot: one process's pools, cumulative since the process started.

A snapshot is what a push carries to the sidecar and what the embedded collector turns
into metric families. Counters and histogram buckets are *cumulative* (since process
start, or since fork for a forked worker), so a lost or repeated push loses nothing: the
receiver keeps the latest one per process. Gauges are the state at ``sent_at``.

Wire form, schema version 1 (JSON)::

    {"schema": 1, "seq": 7, "interval": 5.0, "final": false, "sent_at": 1763712000.0,
     "process": {"instance": "9f2c…", "pid": 4242, "host": "web-1", "app": "shop",
                 "started_at": 1763711000.0},
     "pools": {"postgresql://db:5432/shop": {
         "info": {"pool_class": "QueuePool", "dialect": "postgresql", ...},
         "gauges": {"checked_out": 3, "idle": 2, "pending": 0, "overflow": 0,
                    "size": 5, "max_overflow": 10, "max_connections": 15,
                    "utilization_ratio": 0.2, "peak_utilization_ratio": 0.4,
                    "oldest_checkout_seconds": 1.5, "leaked_connections": 0},
         "counters": {"checkouts": 120, "checkout_timeouts": 0, ...},
         "histograms": {"wait_seconds": {"buckets": [...], "counts": [...],
                                          "sum": 0.1, "count": 120}, ...},
         "held": [{"age_seconds": 1.5, "site": "app/views.py:42 in order",
                   "thread": "ThreadPoolExecutor-0_1", "leaked": false}]}}}

``size``, ``max_overflow``, ``max_connections`` and the two ratios are ``null`` where the
pool has no such limit (see :mod:`exporter.poolstate`).
"""

from __future__ import annotations

import os
import socket
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from exporter.poolstate import read_config

SCHEMA_VERSION = 1

GAUGE_NAMES = (
    "checked_out",
    "idle",
    "pending",
    "overflow",
    "size",
    "max_overflow",
    "max_connections",
    "utilization_ratio",
    "peak_utilization_ratio",
    "oldest_checkout_seconds",
    "leaked_connections",
)
HISTOGRAM_NAMES = ("wait_seconds", "use_seconds", "connect_seconds")


@dataclass
class ProcessIdentity:
    """Who is pushing: a random instance id (new after fork), pid, host and app."""

    app: str
    instance: str = field(default_factory=lambda: uuid.uuid4().hex)
    pid: int = field(default_factory=os.getpid)
    host: str = field(default_factory=socket.gethostname)
    started_at: float = field(default_factory=time.time)

    def as_dict(self) -> dict[str, Any]:
        """Wire form of the identity."""
        return {
            "instance": self.instance,
            "pid": self.pid,
            "host": self.host,
            "app": self.app,
            "started_at": self.started_at,
        }


def pool_snapshot(instrumentation: Any, *, top: int = 10) -> dict[str, Any] | None:
    """Wire form of one instrumented pool, or None if its engine is gone."""
    engine = instrumentation.engine
    if engine is None:
        return None
    stats = instrumentation.stats
    reading = stats.read(top=top)
    pool = engine.pool
    config = read_config(pool, reading.checked_out)
    limit = config["max_connections"]
    gauges: dict[str, Any] = {
        "checked_out": reading.checked_out,
        "idle": config["idle"],
        "pending": reading.pending,
        "overflow": config["overflow"],
        "size": config["size"],
        "max_overflow": config["max_overflow"],
        "max_connections": limit,
        "utilization_ratio": reading.checked_out / limit if limit else None,
        "peak_utilization_ratio": reading.peak_checked_out / limit if limit else None,
        "oldest_checkout_seconds": reading.oldest_checkout_seconds,
        "leaked_connections": reading.leaked,
    }
    return {
        "info": instrumentation.info(),
        "gauges": gauges,
        "counters": reading.counters,
        "histograms": reading.histograms,
        "held": [
            {"age_seconds": h.age_seconds, "site": h.site, "thread": h.thread, "leaked": h.leaked}
            for h in reading.held
        ],
    }


def process_snapshot(
    identity: ProcessIdentity,
    instrumentations: list[Any],
    *,
    seq: int,
    interval: float,
    final: bool = False,
    top: int = 10,
) -> dict[str, Any]:
    """Wire form of every live instrumented pool of this process."""
    pools: dict[str, Any] = {}
    for inst in instrumentations:
        snap = pool_snapshot(inst, top=top)
        if snap is not None:
            pools[inst.stats.name] = snap
    return {
        "schema": SCHEMA_VERSION,
        "seq": seq,
        "interval": interval,
        "final": final,
        "sent_at": time.time(),
        "process": identity.as_dict(),
        "pools": pools,
    }
