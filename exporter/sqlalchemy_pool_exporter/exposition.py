"""Metric families built from pool snapshots, for the embedded collector and the sidecar.

Both halves expose identical names, so both feed :func:`pool_families`: the embedded
collector with this process's pools labelled ``pool``, the sidecar with aggregated pools
labelled ``app`` and ``pool`` (and ``process`` with per-process output). Every family,
its help text and its labels come from the catalog
(:mod:`sqlalchemy_pool_exporter.protocol.catalog`); nothing here spells a metric name.
Families are built fresh for every scrape.

Building is the cost of a scrape (about 80 samples per pool), so samples are made as
prometheus_client ``Sample`` tuples directly: its ``add_metric`` helpers re-zip the label
names for every sample, and ``Sample(...)`` itself costs a Python frame. The label dicts
are what is left; they are the same at every scrape of a pool, and so are the samples of
a histogram whose counts did not move, so a caller whose pools are long-lived keeps them
in a :class:`SeriesCache` (a bounded one: pools that come and go only cost a rebuild).
Samples are tuples and exposition never changes their labels, which is what makes
sharing them across scrapes safe. What a scrape of 100 pools costs is measured by
``benchmarks/collect.py``.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable, Sequence
from functools import partial
from itertools import compress, repeat
from operator import ne
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


#: Sample fields after (name, labels, value) — timestamp, exemplar and, in newer
#: prometheus_client, native_histogram — all unset here.
_TAIL = (None,) * (len(Sample._fields) - 3)
_NONES = [repeat(None)] * len(_TAIL)
#: A Sample from a tuple of all its fields: what ``Sample(...)`` does, minus a Python frame.
_SAMPLE = partial(tuple.__new__, Sample)
#: Every series of the gauge and counter rows, flat, gauges first: (row index, snapshot
#: section, field, sample name, its own labels). Taken from the catalog once, not per
#: pool and scrape; a family's series keep their catalog order.
_SCALARS = tuple(
    (i, _SECTION[row.kind], field, row.exposed, dict(zip(row.labels, values, strict=True)))
    for kind in ("gauge", "counter")
    for i, row in enumerate(POOL_METRICS)
    if row.kind == kind
    for values, field in row.fields
)
_ROWS = [row for row, *_ in _SCALARS]
_NAMES = [name for _, _, _, name, _ in _SCALARS]
_GAUGE_FIELDS = [field for _, section, field, _, _ in _SCALARS if section == "gauges"]
_COUNTER_FIELDS = [field for _, section, field, _, _ in _SCALARS if section == "counters"]
#: Stands for "no value yet": unequal to every value, None included.
_UNSET = object()
#: (row index, name, field) of each histogram row, and (row index, name) of the info row.
_HISTOGRAMS = tuple(
    (i, row.name, row.fields[0][1]) for i, row in enumerate(POOL_METRICS) if row.kind == "histogram"
)
_INFO = tuple((i, row.name) for i, row in enumerate(POOL_METRICS) if row.kind == "info")


class PoolSeries:
    """What one pool's samples reuse from scrape to scrape.

    Its label dicts, which never change, and its last samples: a sample whose value
    (a histogram whose counts) did not move since the last scrape is served again as it
    was — an idle pool costs one comparison of its values and of each histogram.
    """

    __slots__ = ("base", "buckets", "histograms", "info", "labels", "present", "scalars", "values")

    def __init__(self, base: dict[str, str]) -> None:
        self.base = base
        self.labels = [{**base, **own} if own else base for *_, own in _SCALARS]
        # A Sample per series, None where the value is None; and the values they show.
        self.scalars: list[Any] = [None] * len(_SCALARS)
        self.values: list[Any] = [_UNSET] * len(_SCALARS)
        self.present: list[bool] = [False] * len(_SCALARS)
        self.buckets: dict[tuple[float, ...], list[dict[str, str]]] = {}
        self.histograms: dict[int, tuple[Any, list[Sample]]] = {}  # row -> (values, samples)
        self.info: tuple[dict[str, str], Sample] | None = None

    def add(
        self, snap: dict[str, Any], series: list[list[Sample]], families: list[list[Sample]]
    ) -> None:
        """Append this pool's samples of ``snap`` to each family's sample list.

        ``series`` is each scalar series' family sample list, in :data:`_SCALARS` order.
        The per-series work is done by C iterators: reading the values, finding those
        that moved, appending; only a moved value costs Python code (a new sample).
        """
        values = [
            *map(snap["gauges"].get, _GAUGE_FIELDS),
            *map(snap["counters"].get, _COUNTER_FIELDS),
        ]
        if values != self.values:
            samples, labels = self.scalars, self.labels
            for j in compress(range(len(values)), map(ne, values, self.values)):
                value = values[j]
                # None: no such limit for this pool class, no sample
                samples[j] = (
                    None if value is None else _SAMPLE((_NAMES[j], labels[j], float(value), *_TAIL))
                )
            self.values = values
            self.present = [sample is not None for sample in samples]
        present = self.present
        deque(map(list.append, compress(series, present), compress(self.scalars, present)), 0)
        for row, name, field in _HISTOGRAMS:
            families[row] += self.histogram(row, name, snap["histograms"][field])
        info = snap.get("info")
        if info:
            for row, name in _INFO:
                families[row].append(self.info_sample(name, info))

    def le(self, bounds: tuple[float, ...]) -> list[dict[str, str]]:
        """Labels of each ``_bucket`` sample for ``bounds`` (+Inf last)."""
        labels = self.buckets.get(bounds)
        if labels is None:
            les = [*map(format_le, bounds), "+Inf"]
            labels = self.buckets[bounds] = [{**self.base, "le": le} for le in les]
        return labels

    def info_sample(self, name: str, info: dict[str, str]) -> Sample:
        """The ``sqlalchemy_pool_info`` sample for ``info``."""
        last = self.info
        if last is not None and last[0] == info:
            return last[1]
        labels = self.base | {k: str(info.get(k, "")) for k in INFO_LABELS}
        sample = _SAMPLE((name, labels, 1.0, *_TAIL))
        self.info = (dict(info), sample)
        return sample

    def histogram(self, row: int, name: str, hist: dict[str, Any]) -> list[Sample]:
        """The ``_bucket``, ``_count`` and ``_sum`` samples of one histogram."""
        bounds = tuple(hist["buckets"])
        counts = tuple(hist["counts"])
        key = (bounds, counts, hist["sum"])
        last = self.histograms.get(row)
        if last is not None and last[0] == key:
            return last[1]
        # Most of a pool's samples are buckets: made by C iterators, no Python frame each.
        buckets = zip(repeat(f"{name}_bucket"), self.le(bounds), map(float, counts), *_NONES)
        samples = [
            *map(_SAMPLE, buckets),
            _SAMPLE((f"{name}_count", self.base, float(counts[-1]), *_TAIL)),
            _SAMPLE((f"{name}_sum", self.base, float(hist["sum"]), *_TAIL)),
        ]
        self.histograms[row] = (key, samples)
        return samples


class SeriesCache:
    """:class:`PoolSeries` by label values, kept across scrapes; emptied when over ``limit``."""

    def __init__(self, limit: int = 1024) -> None:
        self.limit = limit
        self._entries: dict[tuple[str, ...], PoolSeries] = {}

    def get(self, names: tuple[str, ...], values: tuple[str, ...]) -> PoolSeries:
        """The pool labelled ``values`` (``names`` are the caller's, always the same)."""
        entry = self._entries.get(values)
        if entry is None:
            if len(self._entries) >= self.limit:
                self._entries = {}  # a reader still holding the old dict keeps its entries
            entry = self._entries[values] = PoolSeries(dict(zip(names, values, strict=True)))
        return entry


def pool_families(
    label_names: Sequence[str], items: Iterable[PoolItem], cache: SeriesCache | None = None
) -> list[Metric]:
    """Every pool family of the catalog for ``items`` (label values, pool snapshot)."""
    names = tuple(label_names)
    families = [family(row, names) for row in POOL_METRICS]
    samples = [fam.samples for fam in families]
    series = [samples[row] for row in _ROWS]
    for values, snap in items:
        if cache is None:
            pool = PoolSeries(dict(zip(names, values, strict=True)))
        else:
            pool = cache.get(names, tuple(values))
        pool.add(snap, series, samples)
    return families
