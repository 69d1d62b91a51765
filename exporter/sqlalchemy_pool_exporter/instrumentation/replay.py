"""Histogram growth replayed as observations, for metrics APIs that take no buckets.

The exporter keeps its histograms pre-aggregated (a count per bucket and a sum, updated
on the hot path for a few additions). The OpenTelemetry Metrics API has no way to hand it
such a histogram: its ``Histogram`` instrument takes one value per ``record()``, and
there is no asynchronous histogram. So at each collection the growth since the previous
one is *replayed*: for every bucket that gained ``n`` observations, one representative
value inside that bucket is recorded ``n`` times.

What this keeps exact: the observation count, every bucket count (the recording
histogram has the same bounds), and the sum — the representatives sit at the same
relative position ``t`` inside each finite bucket, ``t`` chosen so that they add up to
the growth of the sum; observations beyond the last bound take the rest. What it cannot
keep: the minimum and maximum a backend derives from the recorded values are these
representatives, not observed extremes; and a backend that re-buckets (other bounds, an
exponential histogram) places them where the representatives fall.

A replay stops at a deadline (one ``record()`` costs microseconds, and the SDK fails a
collection whose callbacks take longer than its timeout): what is left is carried over
to the next collection, so a burst is reported late but never lost or counted twice.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from time import perf_counter

from sqlalchemy_pool_exporter.protocol.wire import HistogramData

#: How many records between two looks at the clock.
_CHECK_EVERY = 256


@dataclass(frozen=True)
class Cursor:
    """How far a histogram has been replayed: per-bucket counts (not cumulative) and sum."""

    counts: tuple[int, ...]
    sum: float


def growth(data: HistogramData, cursor: Cursor | None) -> tuple[list[int], float, Cursor]:
    """Per-bucket observations and their sum since ``cursor``, and the cursor after them.

    Counts that went down mean the histogram restarted (a forked worker's fresh stats):
    everything in it is new then.
    """
    cumulative = data["counts"]
    counts = [b - a for a, b in itertools.pairwise([0, *cumulative])]
    now = Cursor(tuple(counts), float(data["sum"]))
    if cursor is None or len(cursor.counts) != len(counts):
        return counts, now.sum, now
    deltas = [b - a for a, b in zip(cursor.counts, counts, strict=True)]
    if any(d < 0 for d in deltas):
        return counts, now.sum, now
    return deltas, now.sum - cursor.sum, now


def representatives(
    bounds: Sequence[float], deltas: Sequence[int], total: float
) -> list[tuple[int, float, int]]:
    """(bucket, value, times) per bucket that grew: values inside, adding up to ``total``.

    ``deltas`` has one count per finite bound plus the last for +Inf; bucket ``i`` holds
    values in ``(bounds[i-1], bounds[i]]`` (the first from 0).
    """
    lows = [0.0, *bounds]
    finite = [(i, d) for i, d in enumerate(deltas[:-1]) if d]
    beyond = deltas[-1]
    low_sum = math.fsum(d * lows[i] for i, d in finite)
    width = math.fsum(d * (bounds[i] - lows[i]) for i, d in finite)
    if beyond:
        # Observations past the last bound are unbounded above: give the finite buckets
        # half their room at most, and those the rest.
        slack = total - low_sum - beyond * bounds[-1]
        t = min(0.5, slack / (2 * width)) if width > 0 else 0.0
    else:
        t = (total - low_sum) / width if width > 0 else 1.0
    t = min(1.0, max(0.0, t))
    out = [
        (i, _inside(lows[i] + t * (bounds[i] - lows[i]), lows[i], bounds[i], i), d)
        for i, d in finite
    ]
    if beyond:
        rest = total - math.fsum(v * d for _, v, d in out)
        value = max(rest / beyond, math.nextafter(bounds[-1], math.inf))
        out.append((len(bounds), value, beyond))
    return out


def replay(
    record: Callable[[float], object],
    data: HistogramData,
    cursor: Cursor | None,
    deadline: float,
) -> tuple[Cursor, int]:
    """Record the growth of ``data`` since ``cursor`` until ``deadline`` (``perf_counter``).

    Returns the cursor after what was recorded, and how many observations are left over.
    """
    deltas, total, now = growth(data, cursor)
    done = [0] * len(deltas)
    done_sum = 0.0
    calls = 0
    for bucket, value, times in representatives(data["buckets"], deltas, total):
        for _ in range(times):
            if calls % _CHECK_EVERY == 0 and calls and perf_counter() > deadline:
                break
            record(value)
            calls += 1
            done[bucket] += 1
        done_sum += value * done[bucket]
        if done[bucket] < times:
            break
    left = sum(deltas) - calls
    if not left:
        return now, 0
    # Partly recorded: move the cursor by exactly what was recorded.
    start = [c - d for c, d in zip(now.counts, deltas, strict=True)]
    counts = tuple(s + d for s, d in zip(start, done, strict=True))
    return Cursor(counts, now.sum - total + done_sum), left


def _inside(value: float, low: float, high: float, index: int) -> float:
    """``value`` moved into ``(low, high]`` (``[0, high]`` for the first bucket)."""
    if index > 0 and value <= low:
        return math.nextafter(low, math.inf)
    return min(value, high)
