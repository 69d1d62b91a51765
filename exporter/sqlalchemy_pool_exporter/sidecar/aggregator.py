"""The aggregator: every live process's latest push, folded per (app, pool).

Each live process (keyed by its random ``process.instance``) has exactly one entry: its
latest accepted push. Pushes are cumulative, so the latest one is all we need and a lost
push loses nothing. Per (app, pool) a :class:`Group` keeps, maintained at push time so a
scrape never re-sums thousands of snapshots:

* ``total`` — counters and histograms summed over live processes' latest values plus
  ``retired``: what processes that are gone had reached. A process retires when it sends
  ``final: true`` (at exit), when it stops pushing for ``expiry_factor`` x its own
  interval, or — for one pool — when that pool disappears from its pushes. Retiring moves
  a contribution from live to retired, so ``total`` does not move; a push only ever adds
  the non-negative difference to the process's previous values. Totals never go down.
* the sum gauges (connections, size, pending, …) of live processes, kept the same way;
  the max gauges (utilization, oldest checkout) are taken over live processes at read time.

A retired instance is remembered (bounded, oldest forgotten first) with what it
contributed. If it pushes again — it was only paused, not dead — that contribution is
taken back out of ``retired`` before its new values go in, so totals stay exact.

A pool whose counters or buckets are below what the same process last sent for it is a
new pool under the old name (``uninstrument`` + ``instrument``, an engine re-created
between two pushes): like a Prometheus counter reset, the old values retire and the new
ones count from zero, so nothing is lost or counted twice. (Rejecting it instead would
reject every later push of that process, forever.)

Rejected without any state change: a sequence number not above the instance's last one
(409, a duplicate or out-of-order push), a histogram layout different from the one
already seen for that (app, pool), an instance that changes app, a new process beyond
``max_processes`` (429), a new (app, pool) beyond ``max_groups`` (429,
``too_many_groups``), numbers that grow implausibly (:mod:`.guards`), and a push for a
known instance that does not carry the key (``process.key``) its first push set (409,
``identity_changed``): whoever learns an instance id cannot push in its name, so cannot
pin its sequence number out of the real process's reach.

Bounded state: an (app, pool) with no live process is dropped ``group_retention``
seconds after its last process left (its totals with it: a counter reset if it comes
back), and sooner, oldest first, when a new group needs room under ``max_groups``.
Tombstones keep only counters and histograms, within a budget of pool records
(:mod:`.tombstones`).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy_pool_exporter.protocol.catalog import LIMIT_GAUGES, MAX_GAUGES, SUM_GAUGES
from sqlalchemy_pool_exporter.protocol.records import PoolData, Push, PushRejected
from sqlalchemy_pool_exporter.sidecar.guards import check_growth
from sqlalchemy_pool_exporter.sidecar.tombstones import TombstoneStore, slim
from sqlalchemy_pool_exporter.sidecar.totals import Totals, layout_of, regression

#: Distinct (app, pool) pairs kept; a new one beyond this is rejected.
MAX_GROUPS = 1024
#: Pushes sweep for expired processes at most this often (s); scrapes always sweep.
SWEEP_EVERY = 0.25


@dataclass
class Process:
    """One live process: its identity and its latest accepted push."""

    push: Push
    last_seen: float


@dataclass
class Tombstone:
    """What a retired instance contributed, in case it turns out to be alive."""

    app: str
    seq: int
    pools: dict[str, PoolData]
    key: str = ""


@dataclass
class Group:
    """Aggregated state of one (app, pool)."""

    app: str
    pool: str
    layout: dict[str, tuple[float, ...]]
    total: Totals
    retired: Totals
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

    def join(self, instance: str, data: PoolData) -> None:
        """Make ``data`` the live gauges of ``instance`` (replacing its previous ones)."""
        self.leave(instance)
        self.members[instance] = data
        self._gauges(data.gauges, 1)
        for name, values in self.maxima.items():
            value = data.gauges[name]
            if value is not None:
                values[instance] = value
        self.info = data.info

    def leave(self, instance: str) -> PoolData | None:
        """Drop ``instance``'s live gauges; returns its last data."""
        old = self.members.pop(instance, None)
        if old is not None:
            self._gauges(old.gauges, -1)
            for values in self.maxima.values():
                values.pop(instance, None)
        return old

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


class Aggregator:
    """Thread-safe store of live processes and per-(app, pool) totals."""

    def __init__(
        self,
        *,
        max_processes: int = 1000,
        expiry_factor: float = 3.0,
        max_tombstones: int | None = None,
        clock: Callable[[], float] = time.monotonic,
        on_expire: Callable[[Push, float], None] | None = None,
        max_groups: int = MAX_GROUPS,
        group_retention: float = 3600.0,
        max_tombstone_pools: int = 16384,
    ) -> None:
        self.max_processes = max_processes
        self.on_expire = on_expire  # called with (last push, silent seconds) per expiry
        self.expiry_factor = expiry_factor
        self.max_tombstones = max_tombstones or max(4 * max_processes, 1024)
        self.clock = clock
        self.lock = threading.RLock()
        self.processes: dict[str, Process] = {}
        self.groups: dict[tuple[str, str], Group] = {}
        self.tombstones = TombstoneStore(self.max_tombstones, max_tombstone_pools)
        self.expired_total = 0
        self.resets_total = 0
        self._swept = float("-inf")
        self.max_groups = max_groups
        self.group_retention = group_retention
        self.groups_dropped_total = 0
        self._idle_since: dict[tuple[str, str], float] = {}

    def apply(self, push: Push) -> None:
        """Fold one validated push in, or raise :class:`PushRejected` changing nothing."""
        with self.lock:
            now = self.clock()
            if now - self._swept >= SWEEP_EVERY:
                self._expire(now)
            proc = self.processes.get(push.instance)
            tomb = self.tombstones.get(push.instance) if proc is None else None
            self._check(push, proc, tomb)
            if tomb is not None:
                del self.tombstones[push.instance]
            previous = proc.push.pools if proc is not None else {}
            for name, gone in previous.items():
                if name not in push.pools:  # the pool vanished from this process: retire it
                    group = self.groups[(push.app, name)]
                    group.leave(push.instance)
                    group.retired.add(gone)
            for name, data in push.pools.items():
                group = self._group(push.app, name, data)
                old: PoolData | None = previous.get(name)
                if old is not None and regression(data, old):
                    group.retired.add(old)  # a new pool under an old name: retire the old one
                    old = None
                    self.resets_total += 1
                if old is None and tomb is not None and name in tomb.pools:
                    if regression(data, tomb.pools[name]):
                        self.resets_total += 1  # it stays retired; the new one starts fresh
                    else:
                        old = tomb.pools[name]  # back from retirement: un-retire it first
                        group.retired.subtract(old)
                group.total.add(data, old)
                group.join(push.instance, data)
            if push.final:
                self._retire(push.instance, push)
            else:
                self.processes[push.instance] = Process(push, now)

    def _check(self, push: Push, proc: Process | None, tomb: Tombstone | None) -> None:
        known = proc.push if proc is not None else tomb
        if known is not None:
            if push.seq <= known.seq:
                raise PushRejected(
                    409,
                    "stale_sequence",
                    f"seq {push.seq} is not above {known.seq} for this process",
                )
            if known.app != push.app:
                raise PushRejected(400, "identity_changed", "process.app changed for this instance")
            if known.key != push.key:
                raise PushRejected(
                    409, "identity_changed", "process.key differs: the instance is another's"
                )
        if proc is None and len(self.processes) >= self.max_processes:
            self._expire(self.clock())  # make room for it if anyone has expired
        if proc is None and len(self.processes) >= self.max_processes:
            raise PushRejected(
                429, "too_many_processes", f"more than {self.max_processes} live processes"
            )
        new_groups = 0
        for name, data in push.pools.items():
            group = self.groups.get((push.app, name))
            if group is None:
                new_groups += 1
            elif layout_of(data) != group.layout:
                raise PushRejected(
                    400,
                    "bucket_layout",
                    f"histogram buckets of pool {name[:40]!r} differ from the ones already seen",
                )
        elapsed = self.clock() - proc.last_seen if proc is not None else None
        previous = proc.push.pools if proc is not None else tomb.pools if tomb is not None else {}
        check_growth(push, previous, elapsed, lambda pool: self._total(push.app, pool))
        if new_groups and len(self.groups) + new_groups > self.max_groups:
            self._drop_idle_groups(self.clock(), len(self.groups) + new_groups - self.max_groups)
        if len(self.groups) + new_groups > self.max_groups:
            raise PushRejected(
                429, "too_many_groups", f"more than {self.max_groups} (app, pool) groups"
            )

    def _total(self, app: str, pool: str) -> Totals | None:
        group = self.groups.get((app, pool))
        return group.total if group is not None else None

    def _drop_idle_groups(self, now: float, need: int = 0) -> None:
        """Drop groups idle past the retention; with ``need``, that many more if there are."""
        idle = self._idle_since  # in the order groups became idle, so oldest first
        for key, group in self.groups.items():
            if group.members:
                idle.pop(key, None)
            elif key not in idle:
                idle[key] = now
        if need > len(idle):
            need = 0  # no room to be made: drop only what retention drops anyway
        drop: list[tuple[str, str]] = []
        for key, since in idle.items():
            if len(drop) >= need and now - since < self.group_retention:
                break
            drop.append(key)
        for key in drop:
            del self.groups[key], idle[key]
        if drop:
            self.groups_dropped_total += len(drop)
            self.tombstones.forget_pools(drop)

    def _group(self, app: str, pool: str, data: PoolData) -> Group:
        group = self.groups.get((app, pool))
        if group is None:
            layout = layout_of(data)
            group = Group(app, pool, layout, Totals(layout), Totals(layout))
            self.groups[(app, pool)] = group
        return group

    def _retire(self, instance: str, push: Push) -> None:
        self.processes.pop(instance, None)
        for name, data in push.pools.items():
            group = self.groups[(push.app, name)]
            group.leave(instance)
            group.retired.add(data)
        self.tombstones[instance] = Tombstone(push.app, push.seq, slim(push.pools), push.key)
        while len(self.tombstones) > self.max_tombstones:
            self.tombstones.popitem(last=False)

    def _expire(self, now: float) -> None:
        self._swept = now
        stale = [
            p.push
            for p in self.processes.values()
            if now - p.last_seen > self.expiry_factor * p.push.interval
        ]
        for push in stale:
            silent = now - self.processes[push.instance].last_seen
            self._retire(push.instance, push)
            self.expired_total += 1
            if self.on_expire is not None:
                self.on_expire(push, silent)
        self._drop_idle_groups(now)

    def expire(self) -> None:
        """Retire every process silent for longer than ``expiry_factor`` x its interval."""
        with self.lock:
            self._expire(self.clock())

    def live_count(self) -> int:
        """Number of live processes."""
        with self.lock:
            return len(self.processes)
