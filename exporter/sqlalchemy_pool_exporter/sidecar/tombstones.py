"""The aggregator's memory of retired instances, bounded in entries and in pool records.

When a process retires, the aggregator keeps what it contributed (a :class:`Tombstone`:
its identity, last sequence number and key, and per pool its values) so that a process
which was only paused can be taken back without counting anything twice. A
tombstone needs only what totals need — per pool its counters and histograms — so
:func:`slim` drops everything else a push carried (held connections, info, gauges).
Those counters and histograms are the very objects the last push held, not copies.

:class:`TombstoneStore` is an insertion-ordered mapping that forgets its oldest entries
once it holds more than ``max_entries`` tombstones or more than ``max_pools`` pool
records in all (one process may carry up to ``max_pools`` pools). A forgotten process
that pushes again counts as a new one. ``forgotten`` counts the pool records dropped so.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Iterator, MutableMapping
from dataclasses import dataclass

from sqlalchemy_pool_exporter.protocol.records import PoolData


@dataclass
class Tombstone:
    """What a retired instance contributed, in case it turns out to be alive."""

    app: str
    process: str
    seq: int
    pools: dict[str, PoolData]
    saved: str | None = None  # its entry in the state file, encoded once
    key: str = ""  # the process.key its pushes carried


def slim(pools: dict[str, PoolData]) -> dict[str, PoolData]:
    """Per pool, only the counters and histograms (what totals need)."""
    return {name: PoolData({}, {}, data.counters, data.histograms) for name, data in pools.items()}


class TombstoneStore(MutableMapping[str, Tombstone]):
    """Tombstones by instance, oldest first, bounded by entries and by pool records."""

    def __init__(self, max_entries: int, max_pools: int) -> None:
        self._items: OrderedDict[str, Tombstone] = OrderedDict()
        self.max_entries = max_entries
        self.max_pools = max_pools
        self.pool_count = 0
        self.forgotten = 0

    def __getitem__(self, key: str) -> Tombstone:
        return self._items[key]

    def __setitem__(self, key: str, value: Tombstone) -> None:
        if key in self._items:
            del self[key]
        self._items[key] = value
        self.pool_count += len(value.pools)
        while len(self._items) > 1 and (
            len(self._items) > self.max_entries or self.pool_count > self.max_pools
        ):
            _, dropped = self.popitem(last=False)
            self.forgotten += len(dropped.pools)

    def __delitem__(self, key: str) -> None:
        self.pool_count -= len(self._items.pop(key).pools)

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def popitem(self, last: bool = True) -> tuple[str, Tombstone]:
        """Remove and return the newest (or, with ``last=False``, the oldest) tombstone."""
        key, value = self._items.popitem(last=last)
        self.pool_count -= len(value.pools)
        return key, value

    def forget_pools(self, groups: Iterable[tuple[str, str]]) -> None:
        """Drop every tombstone's record of the given (app, pool) groups."""
        dropped = set(groups)
        apps = {app for app, _ in dropped}
        for tomb in self._items.values():
            if tomb.app in apps:
                for name in [n for n in tomb.pools if (tomb.app, n) in dropped]:
                    del tomb.pools[name]
                    self.pool_count -= 1
                    tomb.saved = None  # its saved entry named the pool: encode it again
