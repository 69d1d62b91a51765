"""Fixed-bucket histograms that cost a bucket lookup and two additions per observation.

prometheus_client's ``Histogram.observe()`` takes a lock and walks every bucket
(~640 ns); on the checkout path we can afford neither. A :class:`Histogram` here keeps
*non-cumulative* counts per bucket and a running sum, and turns them into Prometheus'
cumulative ``le`` form only when a snapshot is taken. Callers serialise observations
themselves (single statements atomic under the GIL), so the histogram holds no lock;
the hot path does the bucket lookup inline (see
:mod:`~sqlalchemy_pool_exporter.instrumentation.acquire`).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Sequence

from sqlalchemy_pool_exporter.protocol.wire import HistogramData

#: Default bucket upper bounds in seconds: 0.5 ms up to 30 s, pool_timeout's default.
DEFAULT_BUCKETS: tuple[float, ...] = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    20.0,
    30.0,
)


def validate_buckets(buckets: Sequence[float]) -> tuple[float, ...]:
    """Return ``buckets`` as a tuple, or raise ValueError if not strictly increasing and finite."""
    bounds = tuple(float(b) for b in buckets)
    if not bounds:
        raise ValueError("buckets must not be empty")
    if any(not math.isfinite(b) or b <= 0 for b in bounds):
        raise ValueError("buckets must be finite and positive (+Inf is implied)")
    if any(a >= b for a, b in itertools.pairwise(bounds)):
        raise ValueError("buckets must be strictly increasing")
    return bounds


class Histogram:
    """Non-cumulative bucket counts plus a sum; not thread-safe on its own."""

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...] = DEFAULT_BUCKETS) -> None:
        self.bounds = bounds
        # One slot per finite bound plus the +Inf slot.
        self.counts = [0] * (len(bounds) + 1)
        self.sum = 0.0

    def total(self) -> int:
        """Number of observations so far."""
        return sum(list(self.counts))  # one C call: a consistent copy

    def data(self) -> HistogramData:
        """Cumulative wire form of the current counts."""
        return cumulative(self.bounds, list(self.counts), self.sum)  # one C call: a copy


def cumulative(bounds: tuple[float, ...], counts: Iterable[int], total: float) -> HistogramData:
    """Wire form of non-cumulative ``counts`` per bucket (+Inf last) and their ``total``."""
    running = list(itertools.accumulate(counts))
    return {"buckets": list(bounds), "counts": running, "sum": total, "count": running[-1]}
