"""A ledger: what a set of processes counted, kept so that it never goes down.

A :class:`Ledger` backs one set of exposed series: an (app, pool) in the aggregated
output, or one ``process`` label of it in per-process output. It holds

* ``total`` — the counters and histograms of every process that ever joined, live or
  retired: a live member's push adds the non-negative difference to its previous values,
  and retiring changes nothing here. This is what a scrape shows, so it never goes down.
* ``retired`` — the part of ``total`` that retired members contributed (total =
  retired + the live members' latest values, exactly). A retired member that pushes
  again is taken back out of it before its new values count, so nothing counts twice.
* ``live`` — how many live members use each histogram bucket layout.

**Bucket layouts.** Counters are one sum whatever the layout. Histograms of different
layouts cannot be added up, so each layout is kept apart and one is *shown*: the layout
of most live members; on a tie the shown one stays, so no single process can take over
a pool it does not own. A layout that stops being shown is marked *spent* at its
current values, and if it is shown again later it shows only what came after: each
switch is a counter reset of the histogram series (new layout from zero), never a
recount. A layout that is neither shown nor used by a live member is forgotten.
"""

from __future__ import annotations

from sqlalchemy_pool_exporter.protocol.records import PoolData
from sqlalchemy_pool_exporter.sidecar.totals import (
    Hists,
    Layout,
    Totals,
    copy_hists,
    hist_dicts,
    zero_hists,
)


class Ledger:
    """Counters and histograms of a set of processes, and the histogram layout shown."""

    __slots__ = ("live", "retired", "shown", "spent", "total")

    def __init__(self, shown: Layout) -> None:
        self.total = Totals()
        self.retired = Totals()
        self.live: dict[Layout, int] = {}
        self.shown = shown
        self.spent: dict[Layout, Hists] = {}

    def count(self, new: PoolData, old: PoolData | None, layout: Layout) -> None:
        """Add a live member's ``new`` values over its ``old`` ones (same ``layout``)."""
        self.total.add(new, old, layout)

    def join(self, layout: Layout) -> None:
        """One more live member uses ``layout``."""
        self.live[layout] = self.live.get(layout, 0) + 1
        self._follow(layout)

    def retire(self, data: PoolData, layout: Layout) -> None:
        """A live member leaves with its last values ``data``: they stay in the total."""
        self.retired.add(data, None, layout)
        left = self.live.get(layout, 0) - 1
        if left > 0:
            self.live[layout] = left
        else:
            self.live.pop(layout, None)
            if layout != self.shown:
                self._forget(layout)
        self._follow(None)

    def revive(self, data: PoolData, layout: Layout) -> None:
        """A retired member is back: take ``data`` out of ``retired`` (not the total)."""
        self.retired.subtract(data, layout)

    def idle(self) -> bool:
        """True if no live member is left."""
        return not self.live

    def histograms(self) -> dict[str, dict[str, object]]:
        """The shown layout's histograms in wire form, less what an earlier showing spent."""
        hists = self.total.hists.get(self.shown)
        if hists is None:
            hists = zero_hists(self.shown)
        return hist_dicts(hists, self.spent.get(self.shown))

    def _follow(self, joined: Layout | None) -> None:
        best = max(self.live.values(), default=0)
        if self.live.get(self.shown, 0) >= best:
            return  # the shown layout keeps ties: one push cannot take a pool over
        leaders = [layout for layout, n in self.live.items() if n == best]
        self.show(joined if joined in leaders else leaders[0])

    def show(self, layout: Layout) -> None:
        """Show ``layout``'s histograms from now on; the one shown so far is spent."""
        if layout == self.shown:
            return
        before, self.shown = self.shown, layout
        if before in self.live:
            hists = self.total.hists.get(before)
            if hists is not None:
                self.spent[before] = copy_hists(hists)
        else:
            self._forget(before)

    def _forget(self, layout: Layout) -> None:
        self.total.hists.pop(layout, None)
        self.retired.hists.pop(layout, None)
        self.spent.pop(layout, None)
