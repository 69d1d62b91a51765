"""The sidecar's ``/api/pools`` with server sessions joined, and ``/api/diagnosis``.

Both read the aggregator (:mod:`~sqlalchemy_pool_exporter.sidecar.views`) and the
database probe's last result (no query at request time; none without a probe).
"""

from __future__ import annotations

from dataclasses import fields
from typing import Any
from urllib.parse import parse_qsl

from sqlalchemy_pool_exporter.diagnosis.findings import document
from sqlalchemy_pool_exporter.diagnosis.inputs import Thresholds
from sqlalchemy_pool_exporter.diagnosis.server import diagnose
from sqlalchemy_pool_exporter.diagnosis.sessions import annotate
from sqlalchemy_pool_exporter.sidecar.aggregator import Aggregator
from sqlalchemy_pool_exporter.sidecar.api import api_document


def server_view(probe: Any) -> dict[str, Any] | None:
    """The probe's last result keyed by catalog name, plus its stamped sessions."""
    result = None if probe is None else probe.last_result()
    if result is None:
        return None
    return {**result.values(), "database": probe.database, "sessions": list(result.sessions)}


def pools_document(agg: Aggregator, probe: Any, *, instances: bool = False) -> dict[str, Any]:
    """``/api/pools``: processes and pools, held connections with their server state."""
    server = server_view(probe)
    doc = api_document(agg, instances=instances)
    return annotate(doc, None if server is None else server["sessions"])


def diagnosis_document(
    agg: Aggregator, probe: Any, thresholds: Thresholds | None = None
) -> dict[str, Any]:
    """``/api/diagnosis``: one finding per cause seen, with evidence and fix."""
    server = server_view(probe)
    doc = pools_document(agg, probe)
    if server is not None:
        server = {**server, "sessions": doc.get("server_sessions", [])}
    return {**document(diagnose(doc["pools"], server, thresholds)), "probe": server is not None}


def thresholds_from_query(query: str) -> Thresholds:
    """Thresholds overridden by ``?name=value`` pairs; ValueError names a bad one."""
    known = {f.name: f.type for f in fields(Thresholds)}
    given: dict[str, Any] = {}
    for name, value in parse_qsl(query):
        if name not in known:
            raise ValueError(f"unknown threshold {name[:40]!r}")
        try:
            number = float(value)
        except ValueError:
            raise ValueError(f"threshold {name}: not a number") from None
        if not number >= 0:
            raise ValueError(f"threshold {name}: must be >= 0")
        given[name] = int(number) if name == "churn_checkouts" else number
    return Thresholds(**given)
