"""The sidecar's durable state and its file format, so a restart loses no count.

What is kept: per (app, pool) its ledger — the totals every scrape showed, the histogram
layout shown, the spent layouts — and with per-process output each ``process`` label's
ledger; and per process, live or retired-but-remembered, its last counters and
histograms with its sequence number. Gauges are not kept: they are the state *now* and
come back with each process's next push.

On restore every process that was live comes back *retired*: the totals are exactly
what was saved, and a process that pushes again is taken back exactly as the aggregator
takes back any paused process (its saved values out, its new cumulative values in), so
nothing is counted twice; one that died while the sidecar was down simply stays counted.
Per-process series of processes that were live come back frozen until they push again.

The file (version 1) is two lines of JSON: a header ``{"format": FORMAT, "version": 1,
"saved_at": <unix time>, "bytes": <length of line 2>, "crc32": <of line 2>}`` and the
body::

    {"counters": [<counter field names>], "histograms": [<histogram field names>],
     "layouts": {"<id>": [[<bounds>], ...]},
     "groups": [{"app": …, "pool": …, "info": {…}, "ledger": L,
                 "series": {"<host/pid>": [L, <seconds frozen, or null while live>]}}],
     "processes": [E, …]}       # retired ones, oldest first, then the live ones

    L = {"shown": "<id>", "counters": [...], "hists": {"<id>": H}, "spent": {"<id>": H}}
    H = [[<cumulative counts>] per histogram…, [<sum> per histogram]]
    E = ["<instance>", "<app>", "<host/pid>", <seq>, {"<pool>": ["<id>", [...], H]}]

Counters are matched by name, so a version that adds one still reads the file.
Anything else unexpected — another format or version, a bad checksum, a shape that
does not fit — makes :func:`decode` raise :class:`StateRefused` and nothing is restored.
"""

from __future__ import annotations

import hashlib
import json
import time
import zlib
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from sqlalchemy_pool_exporter.protocol.catalog import COUNTER_FIELDS, HISTOGRAM_FIELDS
from sqlalchemy_pool_exporter.sidecar.aggregator import Aggregator, Process
from sqlalchemy_pool_exporter.sidecar.ledger import Ledger
from sqlalchemy_pool_exporter.sidecar.tombstones import Tombstone
from sqlalchemy_pool_exporter.sidecar.totals import Hists, Layout, layout_of

FORMAT = "sqlalchemy-pool-exporter sidecar state"
VERSION = 1
#: Largest state file written or read (64 MiB: ~150,000 process pools at default buckets).
MAX_STATE_BYTES = 64 * 1024 * 1024
_COMPACT = (",", ":")


class StateRefused(ValueError):
    """A saved state that cannot be used; the message says why in one line."""


class StateTooLarge(ValueError):
    """The state is over the size cap even without any retired process."""


@lru_cache(maxsize=256)
def layout_id(layout: Layout) -> str:
    """A short stable name for ``layout`` (the same in every file)."""
    return hashlib.blake2b(repr(layout).encode(), digest_size=6).hexdigest()


def _hists(hists: Hists) -> list[Any]:
    # counts may be tuples: JSON writes them as arrays, no copy needed
    out: list[Any] = [hists[n].counts for n in HISTOGRAM_FIELDS]
    out.append([hists[n].sum for n in HISTOGRAM_FIELDS])
    return out


def _ledger(ledger: Ledger, layouts: dict[Layout, str]) -> dict[str, Any]:
    for layout in (ledger.shown, *ledger.total.hists, *ledger.spent):
        layouts[layout] = layout_id(layout)
    return {
        "shown": layouts[ledger.shown],
        "counters": [ledger.total.counters[n] for n in COUNTER_FIELDS],
        "hists": {layouts[lay]: _hists(h) for lay, h in ledger.total.hists.items()},
        "spent": {layouts[lay]: _hists(h) for lay, h in ledger.spent.items()},
    }


@dataclass
class Capture:
    """What to save, taken under the aggregator's lock; encoded outside it."""

    version: int
    groups: list[str]
    entries: list[tuple[str, Process | Tombstone]]  # retired oldest first, then live
    layouts: dict[Layout, str]


def capture(agg: Aggregator) -> Capture:
    """The durable part of ``agg`` (call with ``agg.lock`` held)."""
    now = agg.clock()
    layouts: dict[Layout, str] = {}
    groups = []
    for g in agg.groups.values():
        series = {
            label: [_ledger(ledger, layouts), _age(agg, (g.app, g.pool, label), now)]
            for label, ledger in (g.series or {}).items()
        }
        doc = {"app": g.app, "pool": g.pool, "info": g.info, "ledger": _ledger(g.ledger, layouts)}
        groups.append(json.dumps(doc | {"series": series}, separators=_COMPACT))
    entries: list[tuple[str, Process | Tombstone]] = [*agg.tombstones.items()]
    entries.extend(agg.processes.items())
    return Capture(agg.version, groups, entries, layouts)


def _age(agg: Aggregator, key: tuple[str, str, str], now: float) -> float | None:
    since = agg.frozen.get(key)
    return None if since is None else round(now - since, 3)


def _entry(instance: str, item: Process | Tombstone, layouts: dict[Layout, str]) -> str:
    if isinstance(item, Process):
        push = item.push
        app, label, seq, pools, key = push.app, push.process, push.seq, push.pools, push.key
    else:
        app, label, seq, pools, key = item.app, item.process, item.seq, item.pools, item.key
    ids = {}
    for name, data in pools.items():
        layout = layout_of(data)
        ids[name] = layouts[layout] = layout_id(layout)
    if item.saved is None:  # pushes never change once accepted: encode each one once
        out = {
            name: [ids[name], [data.counters[n] for n in COUNTER_FIELDS], _hists(data.histograms)]
            for name, data in pools.items()
        }
        entry = [instance, app, label, seq, out] + ([key] if key else [])
        item.saved = json.dumps(entry, separators=_COMPACT)
    return item.saved


def encode(snap: Capture, max_bytes: int = MAX_STATE_BYTES) -> tuple[bytes, int]:
    """The file for ``snap`` and how many retired processes did not fit under the cap."""
    live = sum(isinstance(item, Process) for _, item in snap.entries)
    texts = [_entry(instance, item, snap.layouts) for instance, item in snap.entries]
    head = json.dumps(
        {
            "counters": COUNTER_FIELDS,
            "histograms": HISTOGRAM_FIELDS,
            "layouts": {i: list(map(list, lay)) for lay, i in snap.layouts.items()},
        },
        separators=_COMPACT,
    )
    size = len(head) + 40 + sum(map(len, snap.groups)) + len(snap.groups)
    kept = texts[len(texts) - live :]
    size += sum(map(len, kept)) + len(kept)
    if size > max_bytes:
        raise StateTooLarge(f"state of {size} bytes is over the {max_bytes} byte cap")
    retired = texts[: len(texts) - live]
    keep = len(retired)
    while keep and size + len(retired[keep - 1]) + 1 <= max_bytes:  # newest retired first
        size += len(retired[keep - 1]) + 1
        keep -= 1
    body = "".join(
        (
            head[:-1],
            ',"groups":[',
            ",".join(snap.groups),
            '],"processes":[',
            ",".join(retired[keep:] + kept),
            "]}",
        )
    ).encode()
    header = {
        "format": FORMAT,
        "version": VERSION,
        "saved_at": round(time.time(), 3),
        "bytes": len(body),
        "crc32": zlib.crc32(body),
    }
    return json.dumps(header).encode() + b"\n" + body + b"\n", keep
