"""Readers of OpenTelemetry metrics as the tests compare them: one value per series.

``sdk_points`` flattens an SDK ``MetricsData`` (an in-memory reader's), ``proto_points``
an OTLP ``ExportMetricsServiceRequest`` as a collector receives it, into the same form:
``{(instrument name, attributes): Point}``, so a test can assert that both carry the
same values.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

Key = tuple[str, frozenset[tuple[str, str]]]


@dataclass(frozen=True)
class Point:
    """A number (gauges, sums), or a histogram's count, sum, bounds and bucket counts."""

    unit: str
    value: float | None = None
    count: int | None = None
    sum: float | None = None
    bounds: tuple[float, ...] = ()
    buckets: tuple[int, ...] = ()


def key(name: str, attributes: dict[str, Any]) -> Key:
    """Series key of ``name`` with ``attributes``."""
    return name, frozenset((k, str(v)) for k, v in attributes.items())


def sdk_points(data: Any) -> dict[Key, Point]:
    """Every data point of an SDK ``MetricsData``."""
    out: dict[Key, Point] = {}
    for resource in data.resource_metrics if data is not None else ():
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                for p in metric.data.data_points:
                    if hasattr(p, "bucket_counts"):
                        point = Point(
                            metric.unit,
                            count=p.count,
                            sum=p.sum,
                            bounds=tuple(p.explicit_bounds),
                            buckets=tuple(p.bucket_counts),
                        )
                    else:
                        point = Point(metric.unit, value=p.value)
                    out[key(metric.name, dict(p.attributes))] = point
    return out


def _proto_value(kv: Any) -> str:
    which = kv.value.WhichOneof("value")
    return str(getattr(kv.value, which))


def proto_points(request: Any) -> dict[Key, Point]:
    """Every data point of an OTLP ``ExportMetricsServiceRequest``."""
    out: dict[Key, Point] = {}
    for resource in request.resource_metrics:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                kind = metric.WhichOneof("data")
                for p in getattr(metric, kind).data_points:
                    attributes = {kv.key: _proto_value(kv) for kv in p.attributes}
                    if kind == "histogram":
                        point = Point(
                            metric.unit,
                            count=p.count,
                            sum=p.sum,
                            bounds=tuple(p.explicit_bounds),
                            buckets=tuple(p.bucket_counts),
                        )
                    else:
                        which = p.WhichOneof("value")
                        point = Point(metric.unit, value=float(getattr(p, which)))
                    out[key(metric.name, attributes)] = point
    return out


def named(points: dict[Key, Point], name: str, attributes: dict[str, str] | None = None) -> Point:
    """The point of ``name`` whose attributes include ``attributes`` (exactly one)."""
    wanted = set((attributes or {}).items())
    found = [p for (n, attrs), p in points.items() if n == name and wanted <= attrs]
    assert len(found) == 1, (name, attributes, found)
    return found[0]
