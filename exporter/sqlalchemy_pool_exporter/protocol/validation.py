"""Push validation: a body becomes a typed :class:`Push` or a :class:`PushRejected`.

Everything a push carries is checked here, before the aggregator sees it, so a bad push
changes no state: JSON object, schema version, types, finite non-negative numbers,
integer counts, label lengths, the number of pools, and each histogram's own shape
(strictly increasing finite bounds, cumulative counts that never decrease and end at
``count``). Which fields a pool must carry, which may be null and which are whole
counts is read from the metric catalog. Checks that need the sidecar's state — stale
sequence numbers, too many processes — are the aggregator's, and raise the same
:class:`PushRejected`.

Each check first looks at a whole list at C speed (``set(map(type, values))``, ``min``,
``max``) and only walks it value by value when that fails, to name the bad field: a
sidecar validates thousands of pools a second.

Every rejection carries an HTTP status, a ``reason`` (the label of
``pool_exporter_push_rejected_total``) and a one-line message that never echoes a value
(a value could be huge, or a secret pushed by mistake).
"""

from __future__ import annotations

import json
from itertools import pairwise
from typing import Any

from sqlalchemy_pool_exporter.protocol.catalog import (
    COUNTER_FIELDS,
    GAUGE_FIELDS,
    HISTOGRAM_FIELDS,
    INTEGER_GAUGES,
    LIMIT_GAUGES,
    NULLABLE_GAUGES,
)
from sqlalchemy_pool_exporter.protocol.records import HistData, Limits, PoolData, Push, PushRejected
from sqlalchemy_pool_exporter.protocol.wire import SCHEMA_VERSION

#: Whole counts up to 2**53 are exact in a float64, which is what Prometheus stores;
#: beyond it ``total + 1 == total`` and one push would freeze a total for good.
MAX_COUNT = 2**53
MAX_NUMBER = 1e300
#: Largest histogram sum (seconds): 2**40 s is 35,000 years of summed waits, and keeps a
#: sum's float resolution finer than a millisecond.
MAX_SUM = float(2**40)
MAX_RATIO = 1e6
MAX_BUCKETS = 64
MAX_HELD = 100
MAX_INFO_KEYS = 32
MAX_INTERVAL = 3600.0
MAX_INSTANCE_LENGTH = 128
RATIO_GAUGES = frozenset(f for f in GAUGE_FIELDS if f.endswith("_ratio"))

_INT = frozenset({int})
_STR = frozenset({str})
_NUMBER = frozenset({int, float})
# Every push repeats the same few bucket layouts: each is checked once.
_LAYOUTS: dict[tuple[Any, ...], tuple[float, ...]] = {}
#: A gauge field absent from a push (null is a value: "no such limit"; absent is an error).
_ABSENT = object()


def _bad(where: str, what: str) -> PushRejected:
    return PushRejected(400, "invalid_value", f"{where}: {what}")


def _short(name: str) -> str:
    return repr(name if len(name) <= 40 else name[:40] + "…")


class _NonFinite(ValueError):
    pass


def _no_constants(token: str) -> Any:
    raise _NonFinite(token)


def _count(value: Any, where: str) -> int:
    if type(value) is not int or not 0 <= value <= MAX_COUNT:
        raise _bad(where, "expected a non-negative integer")
    return value


def _counts(values: list[Any], where: str) -> None:
    """Every value a non-negative integer in range; names the first bad one."""
    if set(map(type, values)) <= _INT and (
        not values or (min(values) >= 0 and max(values) <= MAX_COUNT)
    ):
        return
    for i, value in enumerate(values):
        _count(value, f"{where}[{i}]" if where.endswith("counts") else where)


def _number(value: Any, where: str) -> float:
    # NaN fails both comparisons, so this also rejects non-finite values.
    if type(value) not in _NUMBER or not 0 <= value <= MAX_NUMBER:
        raise _bad(where, "expected a finite non-negative number")
    return float(value)


def _text(value: Any, where: str, limit: int, *, label: bool = True) -> str:
    if type(value) is not str:
        raise _bad(where, "expected a string")
    if len(value) > limit:
        reason = "label_too_long" if label else "invalid_value"
        raise PushRejected(400, reason, f"{where}: longer than {limit} characters")
    return value


def _object(value: Any, where: str) -> dict[str, Any]:
    if type(value) is not dict:
        raise _bad(where, "expected an object")
    return value


def parse_push(body: bytes, limits: Limits) -> Push:
    """Decode and validate one push body; raises :class:`PushRejected`."""
    if len(body) > limits.max_body_bytes:
        raise PushRejected(413, "body_too_large", f"body over {limits.max_body_bytes} bytes")
    try:
        doc = json.loads(body, parse_constant=_no_constants)
    except _NonFinite:
        raise _bad("body", "NaN and Infinity are not allowed") from None
    except (ValueError, RecursionError):
        raise PushRejected(400, "malformed_json", "body is not valid JSON") from None
    if type(doc) is not dict:
        raise PushRejected(400, "malformed_json", "body is not a JSON object")
    if doc.get("schema") != SCHEMA_VERSION or type(doc.get("schema")) is not int:
        raise PushRejected(400, "schema_version", f"schema must be {SCHEMA_VERSION}")
    proc = _object(doc.get("process"), "process")
    label_limit = limits.max_label_length
    instance = _text(proc.get("instance"), "process.instance", MAX_INSTANCE_LENGTH, label=False)
    key = _text(proc.get("key", ""), "process.key", MAX_INSTANCE_LENGTH, label=False)
    app = _text(proc.get("app"), "process.app", label_limit)
    host = _text(proc.get("host"), "process.host", label_limit)
    if not instance or not app:
        raise _bad("process", "instance and app must not be empty")
    interval = _number(doc.get("interval"), "interval")
    if not 0 < interval <= MAX_INTERVAL:
        raise _bad("interval", f"expected seconds in (0, {MAX_INTERVAL:g}]")
    final = doc.get("final", False)
    if type(final) is not bool:
        raise _bad("final", "expected true or false")
    pools = _object(doc.get("pools"), "pools")
    if len(pools) > limits.max_pools:
        raise PushRejected(400, "too_many_pools", f"more than {limits.max_pools} pools")
    parsed: dict[str, PoolData] = {}
    for name, pool in pools.items():
        if not name:
            raise _bad("pools", "pool name must not be empty")
        _text(name, "pool name", label_limit)
        parsed[name] = _pool(pool, f"pools[{_short(name)}]", label_limit)
    return Push(
        app=app,
        instance=instance,
        pid=_count(proc.get("pid"), "process.pid"),
        host=host,
        started_at=_number(proc.get("started_at", 0.0), "process.started_at"),
        seq=_count(doc.get("seq"), "seq"),
        interval=interval,
        final=final,
        sent_at=_number(doc.get("sent_at", 0.0), "sent_at"),
        pools=parsed,
        key=key,
    )


def _pool(value: Any, where: str, label_limit: int) -> PoolData:
    pool = _object(value, where)
    info = _info(pool.get("info", {}), f"{where}.info", label_limit)
    gauges_in = _object(pool.get("gauges"), f"{where}.gauges")
    gauges = {
        name: _gauge(name, gauges_in.get(name, _ABSENT), f"{where}.gauges.{name}")
        for name in GAUGE_FIELDS
    }
    counters_in = _object(pool.get("counters"), f"{where}.counters")
    values: list[Any] = [counters_in.get(n) for n in COUNTER_FIELDS]
    if not (set(map(type, values)) <= _INT and min(values) >= 0 and max(values) <= MAX_COUNT):
        for n, v in zip(COUNTER_FIELDS, values, strict=True):
            _count(v, f"{where}.counters.{n}")
    hists_in = _object(pool.get("histograms"), f"{where}.histograms")
    histograms = {
        n: _histogram(hists_in.get(n), f"{where}.histograms.{n}") for n in HISTOGRAM_FIELDS
    }
    held_in = pool.get("held", [])
    if type(held_in) is not list or len(held_in) > MAX_HELD:
        raise _bad(f"{where}.held", f"expected a list of at most {MAX_HELD} entries")
    held = [_held(h, f"{where}.held[{i}]", label_limit) for i, h in enumerate(held_in)]
    return PoolData(
        info=info,
        gauges=gauges,
        counters=dict(zip(COUNTER_FIELDS, values, strict=True)),
        histograms=histograms,
        held=held,
    )


def _info(value: Any, where: str, label_limit: int) -> dict[str, str]:
    info = _object(value, where)
    if len(info) > MAX_INFO_KEYS:
        raise _bad(where, f"more than {MAX_INFO_KEYS} keys")
    if info and not (
        set(map(type, info)) <= _STR
        and set(map(type, info.values())) <= _STR
        and max(map(len, info)) <= label_limit
        and max(map(len, info.values())) <= label_limit
    ):
        for k, v in info.items():
            _text(k, f"{where} key", label_limit)
            _text(v, f"{where}.{k[:40]}", label_limit)
    return info


def _gauge(name: str, value: Any, where: str) -> Any:
    if value is None and name in NULLABLE_GAUGES:
        return None
    if value is _ABSENT:
        if name in NULLABLE_GAUGES:
            raise _bad(where, "missing (null where the pool has no such limit)")
        value = None  # rejected below, with the message of its type
    if name in LIMIT_GAUGES and value == -1 and type(value) is int:
        return -1  # QueuePool(max_overflow=-1): no such limit
    if name in INTEGER_GAUGES:
        return _count(value, where)
    number = _number(value, where)
    if name in RATIO_GAUGES and number > MAX_RATIO:
        raise _bad(where, "ratio out of range")
    return value


def _histogram(value: Any, where: str) -> HistData:
    hist = _object(value, where)
    bounds_in = hist.get("buckets")
    counts = hist.get("counts")
    if type(bounds_in) is not list or not 0 < len(bounds_in) <= MAX_BUCKETS:
        raise _bad(f"{where}.buckets", f"expected a list of 1..{MAX_BUCKETS} bounds")
    key = tuple(bounds_in)
    # (The type test keeps True from passing for a cached 1.0, which hashes equal.)
    bounds = _LAYOUTS.get(key) if set(map(type, key)) <= _NUMBER else None
    if bounds is None:
        bounds = tuple(_number(b, f"{where}.buckets") for b in bounds_in)
        if bounds[0] <= 0 or any(a >= b for a, b in pairwise(bounds)):
            raise _bad(f"{where}.buckets", "bounds must be positive and strictly increasing")
        if len(_LAYOUTS) < 256:
            _LAYOUTS[key] = bounds
    if type(counts) is not list or len(counts) != len(bounds) + 1:
        raise _bad(f"{where}.counts", "expected one count per bound plus +Inf")
    _counts(counts, f"{where}.counts")
    if counts != sorted(counts):
        raise _bad(f"{where}.counts", "cumulative counts must not decrease")
    count = _count(hist.get("count"), f"{where}.count")
    if counts[-1] != count:
        raise _bad(f"{where}.count", "must equal the +Inf bucket count")
    total = _number(hist.get("sum"), f"{where}.sum")
    if total > MAX_SUM:
        raise _bad(f"{where}.sum", f"above {MAX_SUM:.0f} seconds")
    return HistData(bounds, tuple(counts), total, count)


def _held(value: Any, where: str, label_limit: int) -> dict[str, Any]:
    entry = _object(value, where)
    leaked = entry.get("leaked", False)
    if type(leaked) is not bool:
        raise _bad(f"{where}.leaked", "expected true or false")
    # Sites and thread names are shown by /api/pools, never used as labels.
    text_limit = 4 * label_limit
    out = {
        "age_seconds": _number(entry.get("age_seconds"), f"{where}.age_seconds"),
        "site": _text(entry.get("site") or "", f"{where}.site", text_limit, label=False),
        "thread": _text(entry.get("thread") or "", f"{where}.thread", text_limit, label=False),
        "leaked": leaked,
    }
    if entry.get("backend_pid") is not None:  # attribution on: the server session's pid
        out["backend_pid"] = _count(entry["backend_pid"], f"{where}.backend_pid")
    return out
