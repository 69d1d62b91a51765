"""The aggregator: every live process's latest push, folded per (app, pool).

Each live process (keyed by its random ``process.instance``) has exactly one entry: its
latest accepted push. Pushes are cumulative, so the latest one is all we need and a lost
push loses nothing. Each (app, pool) is a :class:`~sqlalchemy_pool_exporter.sidecar.group.Group`
whose ledger adds up what every process that reported it counted, live or retired. A
process retires when it sends ``final: true`` (at exit), when it stops pushing for
``expiry_factor`` x its own interval, or — for one pool — when that pool disappears from
its pushes. Retiring changes no total; a push only ever adds the non-negative difference
to the process's previous values. Totals never go down.

A retired instance is remembered (bounded, oldest forgotten first) with what it
contributed. If it pushes again — it was only paused, not dead, or the sidecar restarted
and restored it (:mod:`~sqlalchemy_pool_exporter.sidecar.state`) — that contribution is
taken back out of the retired part before its new values go in, so totals stay exact.

A pool whose counters or buckets are below what the same process last sent for it, or
whose bucket layout changed, is a new pool under the old name (``uninstrument`` +
``instrument``, an engine re-created between two pushes): like a Prometheus counter
reset, the old values retire and the new ones count from zero, so nothing is lost or
counted twice. Processes of one (app, pool) with different bucket layouts (a deploy that
changed ``buckets=``) are all accepted: see :mod:`~sqlalchemy_pool_exporter.sidecar.ledger`
for which layout the histograms show.

With per-process series (``retention`` set), a ``process`` label whose last process
retired keeps its frozen series for ``retention`` seconds, then they go.

Rejected without any state change (the checks against a process's own history are in
:mod:`.guards`): a sequence number not above the instance's last one (409, a duplicate
or out-of-order push), an instance that changes app, host or pid, a new process beyond
``max_processes`` (429), a new (app, pool) beyond ``max_groups`` (429,
``too_many_groups``), numbers that grow implausibly, and a push for a known instance
that does not carry the key (``process.key``) its first push set (409,
``identity_changed``): whoever learns an instance id cannot push in its name, so cannot
pin its sequence number out of the real process's reach.

Bounded state: an (app, pool) with no live process is dropped ``group_retention``
seconds after its last process left (its totals, frozen series and tombstone records
with it, so the state keeper stops saving them: a counter reset if it comes back), and
sooner, oldest first, when a new group needs room under ``max_groups``. Tombstones keep
only counters and histograms, within a budget of pool records (:mod:`.tombstones`).
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from sqlalchemy_pool_exporter.protocol.records import PoolData, Push, PushRejected
from sqlalchemy_pool_exporter.sidecar.group import Group
from sqlalchemy_pool_exporter.sidecar.guards import check_growth, check_identity
from sqlalchemy_pool_exporter.sidecar.ledger import Ledger
from sqlalchemy_pool_exporter.sidecar.tombstones import Tombstone, TombstoneStore, slim
from sqlalchemy_pool_exporter.sidecar.totals import Layout, Totals, layout_of, regression

#: Distinct (app, pool) pairs kept by default; a new one beyond ``max_groups`` is rejected.
MAX_GROUPS = 1024
#: Pushes sweep for expired processes at most this often (s); scrapes always sweep.
SWEEP_EVERY = 0.25

#: (app, pool, process label) of a per-process series
SeriesKey = tuple[str, str, str]


@dataclass
class Process:
    """One live process: its latest accepted push."""

    push: Push
    last_seen: float
    saved: str | None = None  # its entry in the state file, encoded once


class Aggregator:
    """Thread-safe store of live processes and per-(app, pool) totals."""

    def __init__(
        self,
        *,
        max_processes: int = 1000,
        expiry_factor: float = 3.0,
        max_tombstones: int | None = None,
        retention: float | None = None,
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
        self.retention = retention  # None: no per-process series are kept
        self.clock = clock
        self.lock = threading.RLock()
        self.processes: dict[str, Process] = {}
        self.groups: dict[tuple[str, str], Group] = {}
        self.tombstones = TombstoneStore(self.max_tombstones, max_tombstone_pools)
        # per-process series without a live process, oldest first, with when they froze
        self.frozen: OrderedDict[SeriesKey, float] = OrderedDict()
        self.expired_total = 0
        self.resets_total = 0
        self.version = 0  # bumped by every change, so the state keeper knows what is new
        self._swept = float("-inf")
        self.max_groups = max_groups
        self.group_retention = group_retention
        self.groups_dropped_total = 0
        # groups with no live process, in the order they became idle, with since when
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
            self.version += 1
            if tomb is not None:
                del self.tombstones[push.instance]
            instance, label = push.instance, push.process
            previous = proc.push.pools if proc is not None else {}
            for name, gone in previous.items():
                if name not in push.pools:  # the pool vanished from this process: retire it
                    self._leave(push.app, name, instance, label, gone, now)
            for name, data in push.pools.items():
                layout = layout_of(data)
                group = self._group(push.app, name, layout)
                old: PoolData | None = previous.get(name)
                if old is not None:
                    if layout_of(old) == layout and not regression(data, old):
                        group.update(instance, label, data, layout, old)
                        continue
                    # a new pool under an old name: the old one retires
                    self._leave(push.app, name, instance, label, old, now)
                    self.resets_total += 1
                back = tomb.pools.get(name) if tomb is not None else None
                if back is not None and (layout_of(back) != layout or regression(data, back)):
                    back = None  # it stays retired; the new one starts fresh
                    self.resets_total += 1
                group.enter(instance, label, data, layout, back)
                self.frozen.pop((push.app, name, label), None)
            if push.final:
                self._retire(push, now, None)
            else:
                self.processes[instance] = Process(push, now)

    def _check(self, push: Push, proc: Process | None, tomb: Tombstone | None) -> None:
        if proc is not None:
            check_identity(push, proc.push.app, proc.push.process, proc.push.seq, proc.push.key)
        elif tomb is not None:  # only looked up when no live process holds the instance
            check_identity(push, tomb.app, tomb.process, tomb.seq, tomb.key)
        if proc is None and len(self.processes) >= self.max_processes:
            self._expire(self.clock())  # make room for it if anyone has expired
        if proc is None and len(self.processes) >= self.max_processes:
            raise PushRejected(
                429, "too_many_processes", f"more than {self.max_processes} live processes"
            )
        elapsed = self.clock() - proc.last_seen if proc is not None else None
        previous = proc.push.pools if proc is not None else tomb.pools if tomb is not None else {}
        check_growth(push, previous, elapsed, lambda pool: self._total(push.app, pool))
        new_groups = sum((push.app, name) not in self.groups for name in push.pools)
        if new_groups and len(self.groups) + new_groups > self.max_groups:
            self._drop_idle_groups(self.clock(), len(self.groups) + new_groups - self.max_groups)
        if len(self.groups) + new_groups > self.max_groups:
            raise PushRejected(
                429, "too_many_groups", f"more than {self.max_groups} (app, pool) groups"
            )

    def _total(self, app: str, pool: str) -> Totals | None:
        group = self.groups.get((app, pool))
        return group.ledger.total if group is not None else None

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
        if not drop:
            return
        for key in drop:
            del self.groups[key], idle[key]
        gone = set(drop)
        for series in [k for k in self.frozen if (k[0], k[1]) in gone]:
            del self.frozen[series]  # no frozen per-process series outlive their group
        self.tombstones.forget_pools(drop)  # clears the saved entry of each one it changes
        self.groups_dropped_total += len(drop)
        self.version += 1

    def _group(self, app: str, pool: str, layout: Layout) -> Group:
        group = self.groups.get((app, pool))
        if group is None:
            series: dict[str, Ledger] | None = {} if self.retention is not None else None
            group = self.groups[(app, pool)] = Group(app, pool, Ledger(layout), series)
        return group

    def _leave(
        self, app: str, pool: str, instance: str, label: str, data: PoolData, now: float
    ) -> None:
        if self.groups[(app, pool)].retire(instance, label, data, layout_of(data)):
            key = (app, pool, label)  # its label has no live process left: freeze it
            self.frozen.pop(key, None)
            self.frozen[key] = now

    def _retire(self, push: Push, now: float, saved: str | None) -> None:
        self.processes.pop(push.instance, None)
        for name, data in push.pools.items():
            self._leave(push.app, name, push.instance, push.process, data, now)
        tomb = Tombstone(push.app, push.process, push.seq, slim(push.pools), saved, push.key)
        self.bury(push.instance, tomb)

    def bury(self, instance: str, tomb: Tombstone) -> None:
        """Remember a retired instance (forgetting the oldest beyond ``max_tombstones``)."""
        self.tombstones[instance] = tomb  # the store forgets the oldest beyond its bounds

    def _expire(self, now: float) -> None:
        self._swept = now
        stale = [
            p
            for p in self.processes.values()
            if now - p.last_seen > self.expiry_factor * p.push.interval
        ]
        for proc in stale:
            self.version += 1
            self._retire(proc.push, now, proc.saved)
            self.expired_total += 1
            if self.on_expire is not None:
                self.on_expire(proc.push, now - proc.last_seen)
        if self.retention is not None:
            self._thaw(now, self.retention)
        self._drop_idle_groups(now)

    def _thaw(self, now: float, retention: float) -> None:
        """Drop frozen per-process series older than ``retention`` (or beyond the cap)."""
        frozen = self.frozen
        while frozen:
            key, since = next(iter(frozen.items()))
            if now - since < retention and len(frozen) <= self.max_tombstones:
                return
            del frozen[key]
            self.version += 1
            group = self.groups.get((key[0], key[1]))
            if group is not None and group.series is not None:
                ledger = group.series.get(key[2])
                if ledger is not None and ledger.idle():
                    del group.series[key[2]]

    def expire(self) -> None:
        """Retire every process silent for longer than ``expiry_factor`` x its interval."""
        with self.lock:
            self._expire(self.clock())

    def restore(
        self,
        groups: Iterable[Group],
        tombstones: Iterable[tuple[str, Tombstone]],
        frozen: Iterable[tuple[SeriesKey, float]],
    ) -> None:
        """Start from saved state: ``frozen`` gives each idle series' seconds since it froze."""
        with self.lock:
            if self.processes or self.groups:
                raise RuntimeError("state can only be restored into an empty aggregator")
            for group in groups:
                if self.retention is None:
                    group.series = None
                elif group.series is None:
                    group.series = {}
                self.groups[(group.app, group.pool)] = group
            for instance, tomb in tombstones:
                self.bury(instance, tomb)
            now = self.clock()
            if self.retention is not None:
                for key, age in sorted(frozen, key=lambda item: -item[1]):
                    self.frozen[key] = now - age

    def live_count(self) -> int:
        """Number of live processes."""
        with self.lock:
            return len(self.processes)
