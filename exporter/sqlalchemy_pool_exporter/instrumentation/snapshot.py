"""Snapshots of this process's pools in the push wire form.

What the pusher sends and the embedded collector exposes: every live instrumented pool,
read from its stats and its pool object at one instant. The format itself is described
in :mod:`sqlalchemy_pool_exporter.protocol.wire`, its fields in the metric catalog.
"""

from __future__ import annotations

import os
import secrets
import socket
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy_pool_exporter.instrumentation import compat, forks
from sqlalchemy_pool_exporter.instrumentation.poolstate import read_config
from sqlalchemy_pool_exporter.protocol.catalog import LIMIT_GAUGES
from sqlalchemy_pool_exporter.protocol.wire import SCHEMA_VERSION


@dataclass
class ProcessIdentity:
    """Who is pushing: a random instance id (new after fork), pid, host and app.

    ``key`` is a second random value that only this process knows: the sidecar shows
    instance ids to whoever may read ``/api/pools?instances=1``, but accepts pushes for
    an instance only with the key its first push carried.
    """

    app: str
    instance: str = field(default_factory=lambda: uuid.uuid4().hex)
    pid: int = field(default_factory=os.getpid)
    host: str = field(default_factory=socket.gethostname)
    started_at: float = field(default_factory=time.time)
    key: str = field(default_factory=lambda: secrets.token_hex(16), repr=False)

    def as_dict(self) -> dict[str, Any]:
        """Wire form of the identity."""
        return {
            "instance": self.instance,
            "pid": self.pid,
            "host": self.host,
            "app": self.app,
            "started_at": self.started_at,
            "key": self.key,
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
    recycle = compat.recycle_seconds(pool)
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
        "oldest_wait_seconds": reading.oldest_wait_seconds,
        "recycle_seconds": recycle if recycle >= 0 else None,
        "leaked_connections": reading.leaked,
    }
    if forks.lends_no_capacity(instrumentation, reading.checked_out, reading.counters["checkouts"]):
        # A parent that only forks hands its pool down: its limits are nobody's capacity.
        for name in LIMIT_GAUGES:
            if gauges[name] is not None:
                gauges[name] = 0
    return {
        "info": instrumentation.info(),
        "gauges": gauges,
        "counters": reading.counters,
        "histograms": reading.histograms,
        "held": [_held(h) for h in reading.held],
    }


def _held(h: Any) -> dict[str, Any]:
    entry = {"age_seconds": h.age_seconds, "site": h.site, "thread": h.thread, "leaked": h.leaked}
    if h.backend_pid is not None:
        entry["backend_pid"] = h.backend_pid
    return entry


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
