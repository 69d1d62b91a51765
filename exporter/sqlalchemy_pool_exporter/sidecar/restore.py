"""Reading a saved state file back (format: :mod:`~sqlalchemy_pool_exporter.sidecar.state`).

:func:`decode` checks everything before anything is used — header, version, length,
checksum, then every shape and number against the bucket layouts it names — and builds
fresh :class:`~sqlalchemy_pool_exporter.sidecar.group.Group` and
:class:`~sqlalchemy_pool_exporter.sidecar.tombstones.Tombstone` objects for
:meth:`~sqlalchemy_pool_exporter.sidecar.aggregator.Aggregator.restore`. A file that does
not pass raises :class:`~sqlalchemy_pool_exporter.sidecar.state.StateRefused` with one
line saying why; a half-read state is never restored.
"""

from __future__ import annotations

import json
import math
import zlib
from dataclasses import dataclass, field
from itertools import pairwise
from typing import Any

from sqlalchemy_pool_exporter.protocol.catalog import COUNTER_FIELDS, HISTOGRAM_FIELDS
from sqlalchemy_pool_exporter.protocol.records import HistData, PoolData
from sqlalchemy_pool_exporter.sidecar.aggregator import SeriesKey
from sqlalchemy_pool_exporter.sidecar.group import Group
from sqlalchemy_pool_exporter.sidecar.ledger import Ledger
from sqlalchemy_pool_exporter.sidecar.state import FORMAT, VERSION, StateRefused
from sqlalchemy_pool_exporter.sidecar.tombstones import Tombstone
from sqlalchemy_pool_exporter.sidecar.totals import Hists, Layout

MAX_TEXT = 4096
#: more (app, pool) groups than any max_groups setting allows: the file is not ours
MAX_SAVED_GROUPS = 1_000_000


@dataclass
class Restored:
    """A decoded state, ready for ``Aggregator.restore``."""

    saved_at: float
    groups: list[Group] = field(default_factory=list)
    tombstones: list[tuple[str, Tombstone]] = field(default_factory=list)
    frozen: list[tuple[SeriesKey, float]] = field(default_factory=list)


def _need(ok: bool, what: str) -> None:
    if not ok:
        raise StateRefused(what)


def _count(value: Any) -> int:
    _need(type(value) is int and value >= 0, "a count is not a non-negative integer")
    return int(value)


def _real(value: Any) -> float:
    _need(type(value) in (int, float) and math.isfinite(value), "a number is not finite")
    return float(value)


def _text(value: Any) -> str:
    _need(type(value) is str and len(value) <= MAX_TEXT, "a name is not a string")
    return str(value)


def _list(value: Any, length: int | None = None) -> list[Any]:
    _need(type(value) is list and (length is None or len(value) == length), "wrong shape")
    return list(value)


def _dict(value: Any) -> dict[str, Any]:
    _need(type(value) is dict, "wrong shape")
    return dict(value)


def decode(raw: bytes) -> Restored:
    """The state in ``raw`` (a whole file), or :class:`StateRefused`."""
    line, _, rest = raw.partition(b"\n")
    try:
        header = json.loads(line)
    except ValueError:
        raise StateRefused("not a sidecar state file (no JSON header)") from None
    _need(type(header) is dict and header.get("format") == FORMAT, "not a sidecar state file")
    version = header.get("version")
    _need(version == VERSION, f"version {version!r} is not {VERSION}, the one this sidecar reads")
    body = rest.removesuffix(b"\n")
    _need(header.get("bytes") == len(body), "truncated (length differs from its header)")
    _need(header.get("crc32") == zlib.crc32(body), "corrupt (checksum mismatch)")
    try:
        return _Reader(json.loads(body), _real(header.get("saved_at"))).read()
    except StateRefused:
        raise
    except (ValueError, TypeError, KeyError, IndexError, AttributeError) as exc:
        raise StateRefused(f"malformed ({type(exc).__name__})") from None


class _Reader:
    def __init__(self, doc: Any, saved_at: float) -> None:
        self.doc = _dict(doc)
        self.out = Restored(saved_at)
        names = [_text(n) for n in _list(self.doc["counters"])]
        self.counter_index = {n: names.index(n) if n in names else None for n in COUNTER_FIELDS}
        self.counter_count = len(names)
        _need(self.doc["histograms"] == list(HISTOGRAM_FIELDS), "made for other histograms")
        self.layouts = {_text(i): self._layout(v) for i, v in _dict(self.doc["layouts"]).items()}

    def read(self) -> Restored:
        groups = {}
        for doc in _list(self.doc["groups"]):
            group = self._group(_dict(doc))
            key = (group.app, group.pool)
            _need(key not in groups, "an (app, pool) is listed twice")
            groups[key] = group
        _need(len(groups) <= MAX_SAVED_GROUPS, f"more than {MAX_SAVED_GROUPS} pools")
        self.out.groups = list(groups.values())
        for doc in _list(self.doc["processes"]):
            parts = _list(doc)
            _need(len(parts) in (5, 6), "wrong shape")  # the sixth: the process.key, if any
            instance, app, label, seq, pools = parts[:5]
            secret = _text(parts[5]) if len(parts) == 6 else ""
            tomb = Tombstone(_text(app), _text(label), _count(seq), {}, key=secret)
            for name, entry in _dict(pools).items():
                _need((tomb.app, name) in groups, "a process names a pool that is not listed")
                tomb.pools[name] = self._pool(entry)
            self.out.tombstones.append((_text(instance), tomb))
        return self.out

    def _layout(self, value: Any) -> Layout:
        bounds = [tuple(_real(b) for b in _list(h)) for h in _list(value, len(HISTOGRAM_FIELDS))]
        for one in bounds:
            _need(0 < len(one) <= 64 and one[0] > 0, "a bucket layout is invalid")
            _need(all(a < b for a, b in pairwise(one)), "a bucket layout is invalid")
        return tuple(bounds)

    def _counters(self, value: Any) -> dict[str, int]:
        values = [_count(v) for v in _list(value, self.counter_count)]
        return {n: 0 if i is None else values[i] for n, i in self.counter_index.items()}

    def _hists(self, value: Any, layout: Layout) -> Hists:
        parts = _list(value, len(HISTOGRAM_FIELDS) + 1)
        sums = _list(parts[-1], len(HISTOGRAM_FIELDS))
        out = {}
        for name, bounds, counts, total in zip(
            HISTOGRAM_FIELDS, layout, parts[:-1], sums, strict=True
        ):
            counts = [_count(c) for c in _list(counts, len(bounds) + 1)]
            _need(counts == sorted(counts), "histogram counts are not cumulative")
            out[name] = HistData(bounds, counts, _real(total), counts[-1])
        return out

    def _ledger(self, value: Any) -> Ledger:
        doc = _dict(value)
        ledger = Ledger(self.layouts[_text(doc["shown"])])
        ledger.total.counters = self._counters(doc["counters"])
        for part, target in (("hists", ledger.total.hists), ("spent", ledger.spent)):
            for layout_id, hists in _dict(doc[part]).items():
                layout = self.layouts[_text(layout_id)]
                target[layout] = self._hists(hists, layout)
        for layout, spent in ledger.spent.items():
            total = ledger.total.hists.get(layout)
            if total is None:
                raise StateRefused("a spent layout has no totals")
            for name, h in spent.items():
                ok = all(a <= b for a, b in zip(h.counts, total[name].counts, strict=True))
                _need(ok, "a spent layout is above its totals")
        ledger.retired = ledger.total.copy()  # every process comes back retired
        return ledger

    def _group(self, doc: dict[str, Any]) -> Group:
        info = {_text(k): _text(v) for k, v in _dict(doc["info"]).items()}
        group = Group(_text(doc["app"]), _text(doc["pool"]), self._ledger(doc["ledger"]))
        group.info = info
        group.series = {}
        for label, item in _dict(doc["series"]).items():
            ledger_doc, age = _list(item, 2)
            group.series[_text(label)] = self._ledger(ledger_doc)
            since = 0.0 if age is None else _real(age)  # live at save: frozen from now
            self.out.frozen.append(((group.app, group.pool, label), max(0.0, since)))
        return group

    def _pool(self, value: Any) -> PoolData:
        layout_id, counters, hists = _list(value, 3)
        layout = self.layouts[_text(layout_id)]
        return PoolData({}, {}, self._counters(counters), self._hists(hists, layout))
