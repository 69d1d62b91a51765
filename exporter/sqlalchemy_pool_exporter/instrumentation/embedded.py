"""Embedded exposition: this process's pools in prometheus_client's registry.

:class:`PoolCollector` is registered by ``instrument()`` into the default registry (or
the one passed), so an app that already serves ``/metrics`` gets pool metrics for free.
Families are built from live stats at every scrape. :func:`start_http_server` serves a
registry on its own port for apps that have no ``/metrics`` of their own; it never
raises into the app: a port that is taken (the usual case in a multi-process server,
where every worker tries the same port) is one warning line and ``None``.

**prometheus_client multiprocess mode** (``PROMETHEUS_MULTIPROC_DIR``, common in
gunicorn apps with their own ``/metrics``) serves a fresh registry holding only a
``MultiProcessCollector``, which reads the ``.db`` files that prometheus_client's own
metric classes write on every update: collectors registered in the default registry,
ours included, are not served. Rather than mirroring pool stats into those files, the
exporter says so once per process, at the first ``instrument()``, and names the fix:
the sidecar. Why not mirror: pool statistics live in process memory and change on the
hot path; copying them into mmap files would need a writer thread per process, gauges
of dead workers would linger (``livesum`` drops them only when the app calls
``mark_process_dead``), files pile up with worker churn, and scrapes slow down with
them — the problems the sidecar exists to avoid, and which it already aggregates
correctly (see the README's "The sidecar"). With a push URL set, the metrics are
at the sidecar and nothing is said.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import prometheus_client
from prometheus_client.core import Metric
from prometheus_client.registry import Collector

from sqlalchemy_pool_exporter.exposition import SeriesCache, family, pool_families
from sqlalchemy_pool_exporter.instrumentation import registry
from sqlalchemy_pool_exporter.instrumentation.snapshot import pool_snapshot
from sqlalchemy_pool_exporter.logs import get_logger
from sqlalchemy_pool_exporter.protocol.catalog import metric

log = get_logger(__name__)
#: What a multi-process app does instead of serving metrics from each process.
MULTI_PROCESS_HINT = (
    "multi-process apps: run the sidecar (sqlalchemy-pool-exporter serve) "
    "and set POOL_EXPORTER_PUSH_URL in the app"
)
MULTIPROC_VARIABLES = ("PROMETHEUS_MULTIPROC_DIR", "prometheus_multiproc_dir")
_multiprocess_warned = False


class PoolCollector(Collector):
    """prometheus_client collector for every pool instrumented in this process."""

    def __init__(self) -> None:
        # A process's pools live as long as it does: their labels are built once.
        self._series = SeriesCache()

    def collect(self) -> Iterator[Metric]:
        """Build the pool families labelled ``pool`` from current stats."""
        items = []
        for inst in registry.instrumentations():
            try:
                snap = pool_snapshot(inst, top=0)
            except Exception as exc:  # one broken pool must not break the scrape
                registry.reporter.report("collect", exc)
                continue
            if snap is not None:
                items.append(((inst.stats.name,), snap))
        yield from pool_families(("pool",), items, self._series)
        errors = family(metric("pool_exporter_errors"), ())
        for where, count in sorted(registry.reporter.counts.items()):
            errors.add_metric([where], count)
        yield errors


def start_http_server(
    port: int = 9187, addr: str = "0.0.0.0", registry: Any = None
) -> tuple[Any, Any] | None:
    """Serve ``registry`` (default: the global one) on ``addr:port``: (server, thread) or None."""
    reg = prometheus_client.REGISTRY if registry is None else registry
    try:
        return prometheus_client.start_http_server(port, addr=addr, registry=reg)  # type: ignore[no-any-return]
    except OSError as exc:  # never take the app down for its metrics
        log.warning(
            "cannot serve metrics; not serving them from this process",
            address=f"{addr}:{port}",
            error=exc.strerror or str(exc),
            hint=MULTI_PROCESS_HINT,
        )
        return None


def check_multiprocess_mode(*, pushing: bool, registered: bool) -> None:
    """Say once per process that multiprocess mode will not serve the default registry."""
    global _multiprocess_warned
    if _multiprocess_warned or pushing or not registered:
        return
    if not any(os.environ.get(v) for v in MULTIPROC_VARIABLES):
        return
    _multiprocess_warned = True
    log.warning(
        "pool metrics are not in this app's /metrics: prometheus_client multiprocess "
        "mode (PROMETHEUS_MULTIPROC_DIR) serves only its own files",
        fix=MULTI_PROCESS_HINT,
    )
