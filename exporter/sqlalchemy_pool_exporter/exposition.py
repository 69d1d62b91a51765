"""Metric families built from pool snapshots, for the embedded collector and the sidecar.

Both halves expose identical names, so both feed :func:`pool_families`: the embedded
collector with this process's pools labelled ``pool``, the sidecar with aggregated pools
labelled ``app`` and ``pool`` (and ``process`` with per-process output). Every family,
its help text and its labels come from the catalog
(:mod:`sqlalchemy_pool_exporter.protocol.catalog`); nothing here spells a metric name.
Families are built fresh for every scrape; nothing is stored.

Building is the cost of a scrape, so samples are appended as prometheus_client
``Sample`` tuples directly (its ``add_metric`` helpers re-zip the label names for every
sample); what a scrape of 100 pools costs is measured by ``benchmarks/collect.py``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.samples import Sample

from sqlalchemy_pool_exporter.protocol.catalog import INFO_LABELS, POOL_METRICS
from sqlalchemy_pool_exporter.protocol.catalog import Metric as Row

#: (label values, pool snapshot in wire form)
PoolItem = tuple[Sequence[str], dict[str, Any]]

_SECTION = {"gauge": "gauges", "counter": "counters", "histogram": "histograms"}


def format_le(bound: float) -> str:
    """Prometheus text for a bucket bound, as prometheus_client writes it."""
    return "+Inf" if math.isinf(bound) else repr(float(bound))


def family(row: Row, label_names: Sequence[str]) -> Any:
    """An empty prometheus_client family for a catalog row, with ``label_names`` first.

    Typed ``Any``: its ``add_metric`` differs by kind (a value, or buckets and a sum).
    """
    labels = [*label_names, *row.labels]
    if row.kind == "counter":
        return CounterMetricFamily(row.name, row.help, labels=labels)
    if row.kind == "histogram":
        return HistogramMetricFamily(row.name, row.help, labels=labels)
    return GaugeMetricFamily(row.name, row.help, labels=labels)


def pool_families(label_names: Sequence[str], items: Iterable[PoolItem]) -> list[Metric]:
    """Every pool family of the catalog for ``items`` (label values, pool snapshot)."""
    names = tuple(label_names)
    families = [(row, family(row, names)) for row in POOL_METRICS]
    les: dict[tuple[float, ...], list[str]] = {}
    for values, snap in items:
        base = dict(zip(names, values, strict=True))
        for row, fam in families:
            samples = fam.samples
            if row.kind == "info":
                info = snap.get("info")
                if info:
                    labels = base | {k: str(info.get(k, "")) for k in INFO_LABELS}
                    samples.append(Sample(row.name, labels, 1.0))
                continue
            section = snap[_SECTION[row.kind]]
            if row.kind == "histogram":
                _histogram(samples, row.name, base, section[row.fields[0][1]], les)
                continue
            sample_name = row.exposed
            own = row.labels
            for label_values, field in row.fields:
                value = section.get(field)
                if value is None:
                    continue  # no such limit for this pool class
                labels = base | dict(zip(own, label_values, strict=True)) if own else base
                samples.append(Sample(sample_name, labels, float(value)))
    return [fam for _, fam in families]


def _histogram(
    samples: list[Sample],
    name: str,
    base: dict[str, str],
    hist: dict[str, Any],
    les: dict[tuple[float, ...], list[str]],
) -> None:
    bounds = tuple(hist["buckets"])
    le_texts = les.get(bounds)
    if le_texts is None:
        le_texts = les[bounds] = [*(format_le(b) for b in bounds), "+Inf"]
    bucket = f"{name}_bucket"
    for le, count in zip(le_texts, hist["counts"], strict=True):
        samples.append(Sample(bucket, base | {"le": le}, float(count)))
    samples.append(Sample(f"{name}_count", base, float(hist["counts"][-1])))
    samples.append(Sample(f"{name}_sum", base, float(hist["sum"])))
