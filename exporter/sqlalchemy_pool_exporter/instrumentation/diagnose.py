"""``sqlalchemy_pool_exporter.diagnose(engine)``: the diagnosis inside the app itself.

The same causes as the sidecar's ``/api/diagnosis``, read from this process's stats of
one instrumented engine and — for PostgreSQL with the ``[postgres]`` extra, MySQL and
MariaDB with ``[mysql]``, unless ``probe=False`` — one probe of the server through the
engine's own URL (credentials stay in the process). Useful in a shell, a health endpoint or a test.
"""

from __future__ import annotations

import os
import socket
from typing import Any

from sqlalchemy_pool_exporter.diagnosis.findings import Finding
from sqlalchemy_pool_exporter.diagnosis.inputs import Thresholds
from sqlalchemy_pool_exporter.diagnosis.server import diagnose as diagnose_pools
from sqlalchemy_pool_exporter.diagnosis.sessions import annotate
from sqlalchemy_pool_exporter.instrumentation import registry as instrumented
from sqlalchemy_pool_exporter.instrumentation.engines import load_settings, sync_engine
from sqlalchemy_pool_exporter.instrumentation.snapshot import pool_snapshot
from sqlalchemy_pool_exporter.probes.factory import ProbeUnavailable, make_probe
from sqlalchemy_pool_exporter.probes.url import BACKENDS, MYSQL_QUERY_PARAMETERS


def _sites(held: list[dict[str, Any]]) -> list[dict[str, Any]]:
    sites: dict[str, dict[str, Any]] = {}
    for h in held:
        site = sites.setdefault(
            h["site"], {"site": h["site"], "held": 0, "leaked": 0, "oldest_seconds": 0.0}
        )
        site["held"] += 1
        site["leaked"] += int(h["leaked"])
        site["oldest_seconds"] = max(site["oldest_seconds"], h["age_seconds"])
    return sorted(sites.values(), key=lambda s: (-s["held"], -s["oldest_seconds"]))


def _server(engine: Any, database_url: str | None) -> dict[str, Any] | None:
    if database_url is None:
        backend = BACKENDS.get(engine.dialect.name)
        if backend is None:
            return None
        url = engine.url.set(drivername=backend)
        if backend == "mysql":  # the app's driver options mean nothing to the probe
            url = url.set(query={k: v for k, v in url.query.items() if k in MYSQL_QUERY_PARAMETERS})
        database_url = url.render_as_string(hide_password=False)
    try:
        probe = make_probe(database_url)
    except ProbeUnavailable:  # no driver extra: no server view
        return None
    try:
        if not probe.probe_once():
            return None
        result = probe.last_result()
        assert result is not None
        return {**result.values(), "database": probe.database, "sessions": result.sessions}
    finally:
        probe.stop()


def diagnose(
    engine: Any,
    *,
    probe: bool = True,
    database_url: str | None = None,
    thresholds: Thresholds | None = None,
) -> list[Finding]:
    """Findings (cause number, evidence, fix) for an instrumented engine's pool."""
    sync = sync_engine(engine)
    inst = instrumented.lookup(sync)
    if inst is None:
        raise ValueError("the engine is not instrumented: call instrument(engine) first")
    snap = pool_snapshot(inst, top=100)
    if snap is None:
        return []
    app, pid = load_settings().app, os.getpid()
    process = f"{socket.gethostname()}/{pid}"
    held = [{"process": process, **h} for h in snap["held"]]
    pool = {
        "app": app,
        "pool": inst.stats.name,
        "info": snap["info"],
        "gauges": snap["gauges"],
        "counters": snap["counters"],
        "held": held,
        "sites": _sites(held),
        "per_process": [{"process": process, "gauges": snap["gauges"]}],
    }
    server = _server(sync, database_url) if probe else None
    doc = {"processes": [{"process": process, "app": app, "pid": pid}], "pools": [pool]}
    if server is not None:
        doc = annotate(doc, server["sessions"])
        server = {**server, "sessions": doc["server_sessions"]}
    return diagnose_pools(doc["pools"], server, thresholds)
