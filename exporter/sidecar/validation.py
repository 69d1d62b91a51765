"""Push validation: a body becomes a typed :class:`Push` or a :class:`PushRejected`.

Everything a push carries is checked here, before the aggregator sees it, so a bad push
changes no state: JSON object, schema version 1, types, finite non-negative numbers,
integer counts, label lengths, the number of pools, and each histogram's own shape
(strictly increasing finite bounds, cumulative counts that never decrease and end at
``count``). Checks that need the sidecar's state — stale sequence numbers, bucket
layouts that differ from the ones already seen, too many processes — are the
aggregator's, and raise the same :class:`PushRejected`.

Every rejection carries an HTTP status, a ``reason`` (the label of
``pool_exporter_push_rejected_total``) and a one-line message that never echoes a value
(a value could be huge, or a secret pushed by mistake).
"""

from __future__ import annotations

import json
from itertools import pairwise
from typing import Any

from exporter.sidecar.model import REASONS, HistData, Limits, PoolData, Push, PushRejected
from exporter.snapshot import GAUGE_NAMES, HISTOGRAM_NAMES, SCHEMA_VERSION
from exporter.stats import COUNTER_NAMES

MAX_COUNT = 2**63 - 1  # beyond this a count is certainly garbage (and loses precision)
MAX_NUMBER = 1e300
MAX_BUCKETS = 64
MAX_HELD = 100
MAX_INFO_KEYS = 32
MAX_INTERVAL = 3600.0
MAX_INSTANCE_LENGTH = 128
# Gauges that may be null (no such limit for this pool class) and the ones that are counts.
NULLABLE_GAUGES = frozenset(
    {"size", "max_overflow", "max_connections", "utilization_ratio", "peak_utilization_ratio"}
)
COUNT_GAUGES = frozenset(
    {"checked_out", "idle", "pending", "overflow", "size", "max_overflow", "max_connections",
     "leaked_connections"}
)


__all__ = ["REASONS", "HistData", "Limits", "PoolData", "Push", "PushRejected", "parse_push"]

_INT_TYPE = frozenset({int})
_STR_TYPE = frozenset({str})
_NUMBER_TYPES = frozenset({int, float})
_LAYOUTS: dict[tuple[Any, ...], tuple[float, ...]] = {}


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


def _all_counts(values: list[Any]) -> bool:
    """True if every value is a non-negative integer in range (checked at C speed)."""
    return set(map(type, values)) <= _INT_TYPE and (
        not values or (min(values) >= 0 and max(values) <= MAX_COUNT))


def _number(value: Any, where: str) -> float:
    # NaN fails both comparisons, so this also rejects non-finite values.
    if type(value) not in (int, float) or not 0 <= value <= MAX_NUMBER:
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
        parsed[name] = _pool_fast(pool, label_limit) or _pool(
            pool, f"pools[{_short(name)}]", label_limit)
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
    )


def _pool(value: Any, where: str, label_limit: int) -> PoolData:
    pool = _object(value, where)
    info_in = _object(pool.get("info", {}), f"{where}.info")
    if len(info_in) > MAX_INFO_KEYS:
        raise _bad(f"{where}.info", f"more than {MAX_INFO_KEYS} keys")
    info = {
        _text(k, f"{where}.info key", label_limit): _text(v, f"{where}.info.{k}", label_limit)
        for k, v in info_in.items()
    }
    gauges_in = _object(pool.get("gauges"), f"{where}.gauges")
    gauges: dict[str, Any] = {}
    for name in GAUGE_NAMES:
        value = gauges_in.get(name)
        at = f"{where}.gauges.{name}"
        if value is None and name in NULLABLE_GAUGES:
            gauges[name] = None
        elif name == "max_overflow" and value == -1 and type(value) is int:
            gauges[name] = -1  # QueuePool(max_overflow=-1): no overflow limit
        elif name in COUNT_GAUGES:
            gauges[name] = _count(value, at)
        else:
            gauges[name] = _number(value, at)
    for name in ("utilization_ratio", "peak_utilization_ratio"):
        if gauges[name] is not None and gauges[name] > 1e6:
            raise _bad(f"{where}.gauges.{name}", "ratio out of range")
    counters_in = _object(pool.get("counters"), f"{where}.counters")
    values: list[Any] = [counters_in.get(n) for n in COUNTER_NAMES]
    if _all_counts(values):
        counters = dict(zip(COUNTER_NAMES, values, strict=True))
    else:  # slow path, only to name the bad one
        counters = {n: _count(counters_in.get(n), f"{where}.counters.{n}") for n in COUNTER_NAMES}
    hists_in = _object(pool.get("histograms"), f"{where}.histograms")
    histograms = {n: _histogram(hists_in.get(n), f"{where}.histograms.{n}")
                  for n in HISTOGRAM_NAMES}
    held_in = pool.get("held", [])
    if type(held_in) is not list or len(held_in) > MAX_HELD:
        raise _bad(f"{where}.held", f"expected a list of at most {MAX_HELD} entries")
    held = [_held(h, f"{where}.held[{i}]", label_limit) for i, h in enumerate(held_in)]
    return PoolData(info=info, gauges=gauges, counters=counters, histograms=histograms, held=held)


def _pool_fast(value: Any, label_limit: int) -> PoolData | None:
    """The common, valid pool at C speed where possible; None sends it to :func:`_pool`.

    Accepts only what :func:`_pool` accepts; anything unusual falls through to the slow
    path, which names the offending field.
    """
    if type(value) is not dict:
        return None
    info = value.get("info", {})
    if type(info) is not dict or len(info) > MAX_INFO_KEYS:
        return None
    if info and not (
        set(map(type, info)) <= _STR_TYPE and set(map(type, info.values())) <= _STR_TYPE
        and max(map(len, info)) <= label_limit and max(map(len, info.values())) <= label_limit
    ):
        return None
    gauges_in = value.get("gauges")
    if type(gauges_in) is not dict:
        return None
    gauges: dict[str, Any] = {}
    for name in GAUGE_NAMES:
        v: Any = gauges_in.get(name)
        t = type(v)
        if t is int:
            if not (0 <= v <= MAX_COUNT or (v == -1 and name == "max_overflow")):
                return None
        elif t is float:
            if name in COUNT_GAUGES or not 0 <= v <= MAX_NUMBER:
                return None
        elif v is not None or name not in NULLABLE_GAUGES:
            return None
        gauges[name] = v
    for name in ("utilization_ratio", "peak_utilization_ratio"):
        if gauges[name] is not None and gauges[name] > 1e6:
            return None
    counters_in = value.get("counters")
    if type(counters_in) is not dict:
        return None
    values: list[Any] = [counters_in.get(n) for n in COUNTER_NAMES]
    if not _all_counts(values):
        return None
    hists_in = value.get("histograms")
    if type(hists_in) is not dict:
        return None
    histograms = {}
    for name in HISTOGRAM_NAMES:
        hist = _histogram_fast(hists_in.get(name))
        if hist is None:
            return None
        histograms[name] = hist
    held_in = value.get("held", [])
    if type(held_in) is not list or held_in:
        return None  # held connections are rare and few: the slow path checks them
    return PoolData(info=info, gauges=gauges, counters=dict(zip(COUNTER_NAMES, values,
                    strict=True)), histograms=histograms, held=[])


def _histogram_fast(hist: Any) -> HistData | None:
    if type(hist) is not dict:
        return None
    bounds_in: Any = hist.get("buckets")
    counts: Any = hist.get("counts")
    total: Any = hist.get("sum")
    count: Any = hist.get("count")
    if type(bounds_in) is not list or type(counts) is not list:
        return None
    key = tuple(bounds_in)
    bounds = _LAYOUTS.get(key) if set(map(type, key)) <= _NUMBER_TYPES else None
    if (bounds is None or len(counts) != len(bounds) + 1 or not _all_counts(counts)
            or counts != sorted(counts) or type(count) is not int or counts[-1] != count
            or type(total) not in _NUMBER_TYPES or not 0 <= total <= MAX_NUMBER):
        return None
    return HistData(bounds, tuple(counts), float(total), count)


def _histogram(value: Any, where: str) -> HistData:
    hist = _object(value, where)
    bounds_in = hist.get("buckets")
    counts_in = hist.get("counts")
    if type(bounds_in) is not list or not 0 < len(bounds_in) <= MAX_BUCKETS:
        raise _bad(f"{where}.buckets", f"expected a list of 1..{MAX_BUCKETS} bounds")
    # Every push repeats the same few layouts: check each once. (The type test keeps
    # True from passing for a cached 1.0, which compares and hashes equal.)
    key = tuple(bounds_in)
    bounds = _LAYOUTS.get(key) if set(map(type, key)) <= _NUMBER_TYPES else None
    if bounds is None:
        bounds = tuple(_number(b, f"{where}.buckets") for b in bounds_in)
        if bounds[0] <= 0 or any(a >= b for a, b in pairwise(bounds)):
            raise _bad(f"{where}.buckets", "bounds must be positive and strictly increasing")
        if len(_LAYOUTS) < 256:
            _LAYOUTS[key] = bounds
    if type(counts_in) is not list or len(counts_in) != len(bounds) + 1:
        raise _bad(f"{where}.counts", "expected one count per bound plus +Inf")
    if not _all_counts(counts_in):
        for c in counts_in:
            _count(c, f"{where}.counts")
    if counts_in != sorted(counts_in):
        raise _bad(f"{where}.counts", "cumulative counts must not decrease")
    count = _count(hist.get("count"), f"{where}.count")
    if counts_in[-1] != count:
        raise _bad(f"{where}.count", "must equal the +Inf bucket count")
    return HistData(bounds, tuple(counts_in), _number(hist.get("sum"), f"{where}.sum"), count)


def _held(value: Any, where: str, label_limit: int) -> dict[str, Any]:
    entry = _object(value, where)
    leaked = entry.get("leaked", False)
    if type(leaked) is not bool:
        raise _bad(f"{where}.leaked", "expected true or false")
    # Sites and thread names are shown by /api/pools, never used as labels.
    text_limit = 4 * label_limit
    return {
        "age_seconds": _number(entry.get("age_seconds"), f"{where}.age_seconds"),
        "site": _text(entry.get("site") or "", f"{where}.site", text_limit, label=False),
        "thread": _text(entry.get("thread") or "", f"{where}.thread", text_limit, label=False),
        "leaked": leaked,
    }

