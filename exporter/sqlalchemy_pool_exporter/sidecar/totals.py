"""Additive pool state: counters and histograms that can be summed and subtracted.

A :class:`Totals` holds the cumulative counters and histogram buckets of any set of
processes of one (app, pool). The aggregator keeps two per pool — everything (live plus
retired) and the retired part alone — and moves a process's contribution between them
by exact integer arithmetic, so totals never drift and never go down. Only histogram
sums are floats; they move by non-negative differences, which keeps them monotone.
"""

from __future__ import annotations

from operator import add, lt, sub

from sqlalchemy_pool_exporter.protocol.catalog import COUNTER_FIELDS, HISTOGRAM_FIELDS
from sqlalchemy_pool_exporter.protocol.records import HistData, PoolData


class Totals:
    """Summed counters and cumulative histograms of one (app, pool)."""

    __slots__ = ("counters", "hists")

    def __init__(self, layout: dict[str, tuple[float, ...]]) -> None:
        self.counters = dict.fromkeys(COUNTER_FIELDS, 0)
        self.hists = {
            name: HistData(bounds, [0] * (len(bounds) + 1), 0.0, 0)
            for name, bounds in layout.items()
        }

    def add(self, new: PoolData, old: PoolData | None = None) -> None:
        """Add ``new`` minus ``old`` (a process's previous contribution, if any)."""
        counters = self.counters
        if old is None:
            for name, value in new.counters.items():
                counters[name] += value
        else:
            for name, value in new.counters.items():
                counters[name] += value - old.counters[name]
        for name in HISTOGRAM_FIELDS:
            mine = self.hists[name]
            theirs = new.histograms[name]
            if old is None:
                mine.counts = list(map(add, mine.counts, theirs.counts))
                mine.sum += theirs.sum
                mine.count += theirs.count
            else:
                before = old.histograms[name]
                mine.counts = list(map(add, mine.counts, map(sub, theirs.counts, before.counts)))
                mine.sum += theirs.sum - before.sum
                mine.count += theirs.count - before.count

    def subtract(self, old: PoolData) -> None:
        """Remove a contribution added earlier (a retired process coming back)."""
        for name, value in old.counters.items():
            self.counters[name] -= value
        for name in HISTOGRAM_FIELDS:
            mine = self.hists[name]
            theirs = old.histograms[name]
            mine.counts = list(map(sub, mine.counts, theirs.counts))
            mine.sum = max(0.0, mine.sum - theirs.sum)
            mine.count -= theirs.count

    def histogram_dicts(self) -> dict[str, dict[str, object]]:
        """Histograms in snapshot wire form, as the exposition takes them."""
        return {
            name: {
                "buckets": list(h.buckets),
                "counts": list(h.counts),
                "sum": h.sum,
                "count": h.count,
            }
            for name, h in self.hists.items()
        }


def layout_of(pool: PoolData) -> dict[str, tuple[float, ...]]:
    """Bucket bounds of each histogram of ``pool``."""
    return {name: h.buckets for name, h in pool.histograms.items()}


def regression(new: PoolData, old: PoolData) -> bool:
    """True if any counter, bucket, count or sum of ``new`` is below ``old`` (a reset)."""
    if any(value < old.counters[name] for name, value in new.counters.items()):
        return True
    for name in HISTOGRAM_FIELDS:
        a, b = new.histograms[name], old.histograms[name]
        if a.count < b.count or a.sum < b.sum or any(map(lt, a.counts, b.counts)):
            return True
    return False
