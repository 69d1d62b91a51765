"""The push wire format: one process's pools, cumulative since the process started.

A snapshot is what a push carries to the sidecar and what the embedded collector turns
into metric families. Counters and histogram buckets are *cumulative* (since process
start, or since fork for a forked worker), so a lost or repeated push loses nothing: the
receiver keeps the latest one per process. Gauges are the state at ``sent_at``. The
fields of ``gauges``, ``counters`` and ``histograms`` are those of the metric catalog
(:mod:`sqlalchemy_pool_exporter.protocol.catalog`).

Schema version 1 (JSON)::

    {"schema": 1, "seq": 7, "interval": 5.0, "final": false, "sent_at": 1763712000.0,
     "process": {"instance": "9f2c…", "pid": 4242, "host": "web-1", "app": "shop",
                 "started_at": 1763711000.0, "key": "51e0…"},
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
pool has no such limit; ``max_overflow`` is ``-1`` for ``QueuePool(max_overflow=-1)``.
Histogram ``counts`` are cumulative, one per finite bound plus the last for +Inf.
``process.key`` (optional) is a random secret of the process: the sidecar accepts pushes
for an instance only with the key its first push carried, so an instance id someone has
read cannot be used to push in that process's name.
"""

from __future__ import annotations

from typing import TypedDict

SCHEMA_VERSION = 1
#: The push endpoint's path on the sidecar's push listener.
PUSH_PATH = "/v1/push"


class HistogramData(TypedDict):
    """Wire form of a histogram: finite upper bounds, cumulative counts (last is +Inf)."""

    buckets: list[float]
    counts: list[int]
    sum: float
    count: int
