"""One (app, pool) at the sidecar: the live members' gauges and the ledgers of its counts.

A :class:`Group` is maintained at push time so that a scrape never re-sums thousands of
snapshots:

* ``ledger`` — counters and histograms of every process that reported the pool, live or
  retired (see :mod:`~sqlalchemy_pool_exporter.sidecar.ledger`); the aggregated output.
* ``series`` — with per-process output, one ledger per ``process`` label (``host/pid``):
  what the processes under that label counted. A label outlives its processes — its
  series stay, frozen, after they retire — so ``sum`` of the per-process series is
  exact and a series never moves into another one. Two processes that share a label
  (a restarted container reusing its pids) continue one series that never goes down.
* the sum gauges (connections, size, pending, …) of live members, kept the same way;
  the max gauges (utilization, oldest checkout) are taken over live members at read time.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlalchemy_pool_exporter.protocol.catalog import LIMIT_GAUGES, MAX_GAUGES, SUM_GAUGES
from sqlalchemy_pool_exporter.protocol.records import PoolData
from sqlalchemy_pool_exporter.sidecar.ledger import Ledger
from sqlalchemy_pool_exporter.sidecar.totals import Layout


@dataclass
class Group:
    """Aggregated state of one (app, pool)."""

    app: str
    pool: str
    ledger: Ledger
    #: per ``process`` label, when per-process series are kept (None: they are not)
    series: dict[str, Ledger] | None = None
    members: dict[str, PoolData] = field(default_factory=dict)
    sums: dict[str, int] = field(default_factory=lambda: dict.fromkeys(SUM_GAUGES, 0))
    limits: dict[str, int] = field(default_factory=lambda: dict.fromkeys(LIMIT_GAUGES, 0))
    # live members without a limit (null, or max_overflow=-1) per limit gauge
    unlimited: dict[str, int] = field(default_factory=lambda: dict.fromkeys(LIMIT_GAUGES, 0))
    # per max gauge: instance -> value (nulls left out), so a read is one C-level max()
    maxima: dict[str, dict[str, float]] = field(
        default_factory=lambda: {name: {} for name in MAX_GAUGES}
    )
    info: dict[str, str] = field(default_factory=dict)

    # -- counts -------------------------------------------------------------------------

    def enter(
        self, instance: str, label: str, data: PoolData, layout: Layout, old: PoolData | None
    ) -> None:
        """``instance`` joins with ``data``; ``old``: what it had when it retired, if back."""
        pairs = [(self.ledger, old)]
        own, new = self._own(label, layout)
        if own is not None:
            # A label's series that is new shows the process's own values from zero.
            pairs.append((own, None if new else old))
        for ledger, back in pairs:
            if back is not None:
                ledger.revive(back, layout)
            ledger.count(data, back, layout)
            ledger.join(layout)
        self._join(instance, data)

    def update(
        self, instance: str, label: str, data: PoolData, layout: Layout, old: PoolData
    ) -> None:
        """A live member's next push: ``data`` over its previous ``old`` (same layout)."""
        self.ledger.count(data, old, layout)
        own, new = self._own(label, layout)
        if own is not None:
            own.count(data, None if new else old, layout)
            if new:
                own.join(layout)
        self._join(instance, data)

    def retire(self, instance: str, label: str, data: PoolData, layout: Layout) -> bool:
        """``instance`` leaves with ``data``; True if its label has no live member left."""
        self._leave(instance)
        self.ledger.retire(data, layout)
        own = self.series.get(label) if self.series is not None else None
        if own is None:
            return False
        own.retire(data, layout)
        return own.idle()

    def _own(self, label: str, layout: Layout) -> tuple[Ledger | None, bool]:
        """The label's ledger (None without per-process series), and whether it is new."""
        if self.series is None:
            return None, False
        own = self.series.get(label)
        if own is not None:
            return own, False
        own = self.series[label] = Ledger(layout)
        return own, True

    # -- gauges -------------------------------------------------------------------------

    def _join(self, instance: str, data: PoolData) -> None:
        self._leave(instance)
        self.members[instance] = data
        self._gauges(data.gauges, 1)
        for name, values in self.maxima.items():
            value = data.gauges[name]
            if value is not None:
                values[instance] = value
        self.info = data.info

    def _leave(self, instance: str) -> None:
        old = self.members.pop(instance, None)
        if old is not None:
            self._gauges(old.gauges, -1)
            for values in self.maxima.values():
                values.pop(instance, None)

    def _gauges(self, gauges: dict[str, Any], sign: int) -> None:
        for name in SUM_GAUGES:
            self.sums[name] += sign * gauges[name]
        for name in LIMIT_GAUGES:
            value = gauges[name]
            if value is None or value < 0:
                self.unlimited[name] += sign
            else:
                self.limits[name] += sign * value

    def gauges(self) -> dict[str, Any]:
        """Gauges across live processes as the catalog combines them (sum, max, or absent)."""
        out: dict[str, Any] = dict(self.sums)
        live = bool(self.members)
        for name in LIMIT_GAUGES:
            if not live:
                out[name] = None
            elif self.unlimited[name]:
                out[name] = -1 if name == "max_overflow" else None
            else:
                out[name] = self.limits[name]
        for name, values in self.maxima.items():
            out[name] = max(values.values(), default=None)
        return out
