"""Additive pool state: counters and histograms that can be summed and subtracted.

A :class:`Totals` holds the cumulative counters and histogram buckets of any set of
processes of one (app, pool). Counters mean the same whatever histogram buckets a
process uses, so they are one sum; histograms can only be added up within one bucket
*layout* (the bounds of every histogram of a pool), so they are kept per layout.
Contributions move by exact integer arithmetic, so totals never drift; only histogram
sums are floats, and a total only ever gains non-negative differences, which keeps
them monotone.
"""

from __future__ import annotations

from operator import add, lt, sub

from sqlalchemy_pool_exporter.protocol.catalog import COUNTER_FIELDS, HISTOGRAM_FIELDS
from sqlalchemy_pool_exporter.protocol.records import HistData, PoolData

#: Bucket bounds of each histogram of a pool, in ``HISTOGRAM_FIELDS`` order.
Layout = tuple[tuple[float, ...], ...]
#: One layout's histograms by field name.
Hists = dict[str, HistData]


def layout_of(pool: PoolData) -> Layout:
    """Bucket layout of ``pool``'s histograms."""
    hists = pool.histograms
    return tuple(hists[name].buckets for name in HISTOGRAM_FIELDS)


def zero_hists(layout: Layout) -> Hists:
    """Empty histograms in ``layout``."""
    return {
        name: HistData(bounds, [0] * (len(bounds) + 1), 0.0, 0)
        for name, bounds in zip(HISTOGRAM_FIELDS, layout, strict=True)
    }


def copy_hists(hists: Hists) -> Hists:
    """An independent copy of ``hists``."""
    return {n: HistData(h.buckets, list(h.counts), h.sum, h.count) for n, h in hists.items()}


class Totals:
    """Summed counters, and cumulative histograms per bucket layout."""

    __slots__ = ("counters", "hists")

    def __init__(self) -> None:
        self.counters = dict.fromkeys(COUNTER_FIELDS, 0)
        self.hists: dict[Layout, Hists] = {}

    def layout(self, layout: Layout) -> Hists:
        """The histograms kept for ``layout`` (created empty if there are none)."""
        mine = self.hists.get(layout)
        if mine is None:
            mine = self.hists[layout] = zero_hists(layout)
        return mine

    def add(self, new: PoolData, old: PoolData | None, layout: Layout) -> None:
        """Add ``new`` minus ``old`` (its previous values in the same ``layout``, if any)."""
        counters = self.counters
        if old is None:
            for name, value in new.counters.items():
                counters[name] += value
        else:
            for name, value in new.counters.items():
                counters[name] += value - old.counters[name]
        hists = self.layout(layout)
        for name in HISTOGRAM_FIELDS:
            mine = hists[name]
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

    def subtract(self, old: PoolData, layout: Layout) -> None:
        """Remove a contribution added earlier (a retired process coming back)."""
        for name, value in old.counters.items():
            self.counters[name] -= value
        hists = self.layout(layout)
        for name in HISTOGRAM_FIELDS:
            mine = hists[name]
            theirs = old.histograms[name]
            mine.counts = list(map(sub, mine.counts, theirs.counts))
            mine.sum -= theirs.sum
            mine.count -= theirs.count

    def copy(self) -> Totals:
        """An independent copy."""
        out = Totals()
        out.counters = dict(self.counters)
        out.hists = {layout: copy_hists(h) for layout, h in self.hists.items()}
        return out


def hist_dicts(hists: Hists, spent: Hists | None = None) -> dict[str, dict[str, object]]:
    """``hists`` minus ``spent`` in snapshot wire form, as the exposition takes them."""
    if spent is None:
        return {
            name: {
                "buckets": list(h.buckets),
                "counts": list(h.counts),
                "sum": h.sum,
                "count": h.count,
            }
            for name, h in hists.items()
        }
    return {
        name: {
            "buckets": list(h.buckets),
            "counts": list(map(sub, h.counts, spent[name].counts)),
            "sum": h.sum - spent[name].sum,
            "count": h.count - spent[name].count,
        }
        for name, h in hists.items()
    }


def regression(new: PoolData, old: PoolData) -> bool:
    """True if any counter, bucket, count or sum of ``new`` is below ``old`` (a reset).

    Both must have the same layout; a different layout is a new pool in itself.
    """
    if any(value < old.counters[name] for name, value in new.counters.items()):
        return True
    for name in HISTOGRAM_FIELDS:
        a, b = new.histograms[name], old.histograms[name]
        if a.count < b.count or a.sum < b.sum or any(map(lt, a.counts, b.counts)):
            return True
    return False
