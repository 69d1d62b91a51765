"""Histogram replay: representatives reproduce every bucket count and the sum exactly."""

from __future__ import annotations

import math
from bisect import bisect_left

from hypothesis import given
from hypothesis import strategies as st

from sqlalchemy_pool_exporter.instrumentation.histogram import DEFAULT_BUCKETS, Histogram
from sqlalchemy_pool_exporter.instrumentation.replay import growth, replay, representatives

durations = st.lists(st.floats(min_value=0.0, max_value=120.0), max_size=60)


def observe(hist: Histogram, values: list[float]) -> None:
    for v in values:
        hist.counts[bisect_left(hist.bounds, v)] += 1
        hist.sum += v


def replayed(values: list[tuple[int, float, int]]) -> tuple[list[int], float]:
    counts = [0] * (len(DEFAULT_BUCKETS) + 1)
    for bucket, value, times in values:
        assert bisect_left(DEFAULT_BUCKETS, value) == bucket
        counts[bucket] += times
    return counts, math.fsum(v * n for _, v, n in values)


@given(st.lists(durations, min_size=1, max_size=4))
def test_each_collection_replays_exactly_what_was_observed_since_the_last(
    batches: list[list[float]],
) -> None:
    hist = Histogram()
    cursor = None
    for batch in batches:
        observe(hist, batch)
        deltas, total, cursor = growth(hist.data(), cursor)
        values = representatives(DEFAULT_BUCKETS, deltas, total)
        counts, replayed_sum = replayed(values)
        assert counts == [
            sum(1 for v in batch if bisect_left(DEFAULT_BUCKETS, v) == i)
            for i in range(len(DEFAULT_BUCKETS) + 1)
        ]
        assert all(n > 0 and v >= 0 for _, v, n in values)
        assert math.isclose(replayed_sum, math.fsum(batch), rel_tol=1e-9, abs_tol=1e-12)


def test_restarted_histogram_replays_from_zero() -> None:
    hist = Histogram()
    observe(hist, [0.001] * 5)
    _, _, cursor = growth(hist.data(), None)
    hist.counts[:] = [0] * len(hist.counts)  # a forked child's stats start again
    hist.sum = 0.0
    observe(hist, [0.2, 0.3])
    deltas, total, _ = growth(hist.data(), cursor)
    assert sum(deltas) == 2
    assert math.isclose(total, 0.5)


def test_values_sit_inside_their_buckets_at_the_edges() -> None:
    bounds = (0.001, 0.01)
    # All at the very top of their buckets, and beyond the last bound.
    values = representatives(bounds, [1, 1, 1], 0.001 + 0.01 + 50.0)
    assert [bisect_left(bounds, v) for _, v, _ in values] == [0, 1, 2]
    assert math.isclose(sum(v for _, v, _ in values), 50.011)
    # All at the very bottom: the representative is just above the lower bound.
    ((bucket, value, times),) = representatives(bounds, [0, 2, 0], 2 * 0.001)
    assert (bucket, bisect_left(bounds, value), times) == (1, 1, 2)
    assert 0.001 < value < 0.0011


def test_a_replay_past_its_deadline_carries_the_rest_over_exactly() -> None:
    hist = Histogram()
    values = [0.0002 * (i % 7) + 0.004 * (i % 3) for i in range(1000)]
    observe(hist, values)
    recorded: list[float] = []
    # Deadline already passed: it stops at the first look at the clock (256 records).
    cursor, left = replay(recorded.append, hist.data(), None, deadline=-math.inf)
    assert (len(recorded), left) == (256, 744)
    cursor, left = replay(recorded.append, hist.data(), cursor, deadline=math.inf)
    assert (len(recorded), left) == (1000, 0)
    assert sorted(bisect_left(DEFAULT_BUCKETS, v) for v in recorded) == sorted(
        bisect_left(DEFAULT_BUCKETS, v) for v in values
    )
    assert math.isclose(math.fsum(recorded), math.fsum(values), rel_tol=1e-9)
    assert replay(recorded.append, hist.data(), cursor, deadline=math.inf)[1] == 0
    assert len(recorded) == 1000
