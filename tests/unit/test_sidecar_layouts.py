"""Bucket layouts: a deploy that changes ``buckets=`` is a histogram reset, never a lockout.

Counters are one sum whatever the layout; the histograms show the layout of most live
processes (ties keep the one shown), so a single process with other buckets can neither
block nor take over a pool.
"""

from __future__ import annotations

from typing import Any

import pytest

from sqlalchemy_pool_exporter.protocol.records import REASONS
from sqlalchemy_pool_exporter.sidecar.server import Sidecar
from sqlalchemy_pool_exporter.sidecar.settings import SidecarSettings
from sqlalchemy_pool_exporter.sidecar.views import aggregated_items
from tests.unit.sidecar_payloads import BUCKETS, encode, histogram, payload, pool

A = BUCKETS
B = [0.01, 0.1, 1.0, 10.0]


def version(bucket_bounds: list[float], checkouts: int, waits: list[int]) -> dict[str, Any]:
    """A pool snapshot whose histograms all use ``bucket_bounds``; ``waits`` per bucket."""
    empty = histogram(buckets=bucket_bounds)
    return pool(
        checkouts=checkouts,
        hist={
            "wait_seconds": histogram(waits, total=float(sum(waits)), buckets=bucket_bounds),
            "use_seconds": empty,
            "connect_seconds": empty,
        },
    )


def a(checkouts: int, slow: int = 0) -> dict[str, Any]:
    return version(A, checkouts, [checkouts - slow] + [0] * (len(A) - 1) + [slow])


def b(checkouts: int, slow: int = 0) -> dict[str, Any]:
    return version(B, checkouts, [checkouts - slow, 0, 0, 0, slow])


@pytest.fixture
def sc() -> Sidecar:
    return Sidecar(SidecarSettings())


def push(sc: Sidecar, instance: str, seq: int, data: dict[str, Any], **kw: Any) -> int:
    status, _ = sc.ingest(encode(payload(instance, seq=seq, pools={"db": data}, **kw)))
    return status


def shown(sc: Sidecar) -> tuple[int, list[float], list[int]]:
    """Aggregated checkouts, and the wait histogram's bounds and counts."""
    items, _ = aggregated_items(sc.aggregator)
    (item,) = [i for labels, i in items if labels == ("shop", "db")]
    wait = item["histograms"]["wait_seconds"]
    return item["counters"]["checkouts"], wait["buckets"], wait["counts"]


def test_the_bucket_layout_rejection_is_gone() -> None:
    assert "bucket_layout" not in REASONS


def test_a_deploy_with_other_buckets_counts_the_new_version_from_its_first_push(
    sc: Sidecar,
) -> None:
    assert push(sc, "old", 1, a(5, slow=1)) == 200
    assert push(sc, "old", 2, a(8, slow=1), final=True) == 200
    assert shown(sc) == (8, A, [7] * len(A) + [8])
    # the new version: other buckets, its own counts from zero
    assert push(sc, "new", 1, b(3, slow=2)) == 200
    assert shown(sc) == (11, B, [1, 1, 1, 1, 3])  # counters go on; histograms restart
    assert push(sc, "new", 2, b(4, slow=2)) == 200
    assert shown(sc) == (12, B, [2, 2, 2, 2, 4])


def test_a_rolling_switch_follows_most_live_processes(sc: Sidecar) -> None:
    push(sc, "a1", 1, a(10))
    push(sc, "a2", 1, a(10))
    push(sc, "b1", 1, b(1))
    assert shown(sc)[:2] == (21, A)  # b1 is counted, its histograms wait
    push(sc, "b2", 1, b(1))
    assert shown(sc)[:2] == (22, A)  # a tie keeps what is shown
    push(sc, "a1", 2, a(12), final=True)
    # B has most live processes now: its histograms, with what b1 and b2 saw before
    assert shown(sc) == (24, B, [2, 2, 2, 2, 2])
    push(sc, "a2", 2, a(15))  # the last old process still counts its checkouts
    assert shown(sc) == (29, B, [2, 2, 2, 2, 2])
    push(sc, "b1", 2, b(3, slow=1))
    assert shown(sc) == (31, B, [3, 3, 3, 3, 4])


def test_switching_back_shows_only_what_came_after(sc: Sidecar) -> None:
    push(sc, "a1", 1, a(4))
    push(sc, "b1", 1, b(1))
    push(sc, "b2", 1, b(1))
    assert shown(sc)[1] == B  # 2 against 1
    push(sc, "a1", 2, a(6))  # 2 more in A while B is shown
    push(sc, "b1", 2, b(1), final=True)
    push(sc, "b2", 2, b(1), final=True)
    # back to A: a reset from zero with what A counted while not shown, not its old 4
    assert shown(sc) == (8, A, [2] * (len(A) + 1))


def test_a_process_with_other_buckets_cannot_lock_out_or_take_over(sc: Sidecar) -> None:
    assert push(sc, "real", 1, a(10, slow=2)) == 200
    before = shown(sc)
    # any process claiming the same (app, pool) with other buckets
    assert push(sc, "impostor", 1, b(0), pid=666) == 200
    assert shown(sc) == before  # nothing changed for the real app
    assert push(sc, "real", 2, a(13, slow=2)) == 200  # accepted, counted exactly
    assert shown(sc) == (13, A, [11] * len(A) + [13])
    assert push(sc, "impostor", 2, b(5), pid=666) == 200  # its own checkouts are checkouts
    assert shown(sc) == (18, A, [11] * len(A) + [13])
    assert sc.counters.rejected.get("bucket_layout") is None


def test_new_buckets_in_one_process_are_a_reset_of_its_pool(sc: Sidecar) -> None:
    push(sc, "p", 1, a(7))
    # re-instrumented with other buckets: a new pool under the old name, from zero
    assert push(sc, "p", 2, b(2)) == 200
    assert sc.aggregator.resets_total == 1
    assert shown(sc) == (9, B, [2, 2, 2, 2, 2])
    push(sc, "p", 3, b(5))
    assert shown(sc) == (12, B, [5, 5, 5, 5, 5])


def test_a_retired_process_with_other_buckets_coming_back_is_not_counted_twice(
    sc: Sidecar,
) -> None:
    push(sc, "a1", 1, a(3))
    push(sc, "b1", 1, b(4), interval=1.0)
    sc.aggregator.clock = lambda: 1e9  # b1 falls silent and expires
    sc.aggregator.expire()
    assert shown(sc)[0] == 7
    push(sc, "a1", 2, a(3))
    push(sc, "b1", 2, b(6), interval=1.0)  # only paused: 6 replaces its 4
    assert shown(sc)[0] == 9
