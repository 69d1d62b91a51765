"""Bounded sidecar state: exact numbers, keyed instances, group retention, tombstones,
state bytes and the per-process series ceiling — each refusal with its reason."""

from __future__ import annotations

from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from sqlalchemy_pool_exporter.sidecar.server import Sidecar
from sqlalchemy_pool_exporter.sidecar.settings import SidecarSettings
from sqlalchemy_pool_exporter.sidecar.views import aggregated_items
from tests.unit.sidecar_ingest import Clock, push
from tests.unit.sidecar_payloads import BUCKETS, encode, histogram, payload, pool


@pytest.fixture
def clock() -> Clock:
    return Clock()


def make(clock: Clock, **settings: Any) -> Sidecar:
    return Sidecar(SidecarSettings(**settings), clock=clock)


def checkouts(sc: Sidecar, app: str = "shop", name: str = "db") -> int:
    items, _ = aggregated_items(sc.aggregator)
    return int(dict(items)[(app, name)]["counters"]["checkouts"])  # type: ignore[index]


def samples(sc: Sidecar, name: str) -> dict[frozenset[tuple[str, str]], float]:
    from prometheus_client.exposition import generate_latest

    return {
        frozenset(s.labels.items()): s.value
        for f in text_string_to_metric_families(generate_latest(sc.registry).decode())
        for s in f.samples
        if s.name == name
    }


def rejected(sc: Sidecar, reason: str) -> float:
    return samples(sc, "pool_exporter_push_rejected_total")[frozenset({("reason", reason)})]


# -- numbers ---------------------------------------------------------------------------


def test_counts_beyond_2_53_and_huge_sums_are_refused(clock: Clock) -> None:
    sc = make(clock)
    assert push(sc, "a", pools={"db": pool(checkouts=2**53 + 1)}) == (
        400,
        {"error": "pools['db'].counters.checkouts: expected a non-negative integer"},
    )
    huge = pool(hist={"use_seconds": histogram([1] + [0] * len(BUCKETS), total=1e300)})
    assert push(sc, "a", pools={"db": huge}) == (
        400,
        {"error": "pools['db'].histograms.use_seconds.sum: above 1099511627776 seconds"},
    )
    assert push(sc, "a", seq=2**53 + 1)[0] == 400
    assert rejected(sc, "invalid_value") == 3
    assert sc.aggregator.live_count() == 0


def test_implausible_growth_is_refused_and_the_next_honest_push_counts(clock: Clock) -> None:
    sc = make(clock)
    assert push(sc, "a", pools={"db": pool(checkouts=2**40)})[0] == 200
    assert push(sc, "b", pools={"db": pool(checkouts=2**40 + 1)}) == (
        400,
        {"error": "pool 'db': counter checkouts grew by more than 1099511627776"},
    )
    clock.now += 4.0  # 4 s later: at most 10**6 per second (+1 s of slack) more
    assert push(sc, "a", seq=2, pools={"db": pool(checkouts=2**40 + 5_000_001)}) == (
        400,
        {"error": "pool 'db': counter checkouts grew by more than 5000000"},
    )
    assert checkouts(sc) == 2**40
    assert push(sc, "a", seq=3, pools={"db": pool(checkouts=2**40 + 5_000_000)})[0] == 200
    assert checkouts(sc) == 2**40 + 5_000_000
    assert rejected(sc, "implausible_value") == 2


def test_a_total_never_passes_2_53(clock: Clock) -> None:
    sc = make(clock, max_processes=10_000)
    for n in range(8192):
        assert push(sc, f"p{n}", pools={"db": pool(checkouts=2**40)})[0] == 200
    assert checkouts(sc) == 2**53
    assert push(sc, "one-more", pools={"db": pool(checkouts=1)}) == (
        400,
        {"error": "pool 'db': counter checkouts total would pass 2**53"},
    )
    assert checkouts(sc) == 2**53


# -- keyed instances ---------------------------------------------------------------------


def test_an_impostor_cannot_pin_a_live_process_out(clock: Clock) -> None:
    sc = make(clock)
    assert push(sc, "a", key="k-real", pools={"db": pool(checkouts=1)})[0] == 200
    # Someone who read the instance id pushes as it, with a sequence number out of reach.
    assert push(sc, "a", seq=2**53, key="guess", pools={"db": pool(checkouts=9)}) == (
        409,
        {"error": "process.key differs: the instance is another's"},
    )
    assert push(sc, "a", seq=2**53) == (
        409,
        {"error": "process.key differs: the instance is another's"},
    )
    assert push(sc, "a", seq=2, key="k-real", pools={"db": pool(checkouts=5)})[0] == 200
    assert checkouts(sc) == 5
    assert rejected(sc, "identity_changed") == 2
    # The key outlives retirement: a retired instance cannot be taken over either.
    assert push(sc, "a", seq=3, key="k-real", final=True, pools={"db": pool(checkouts=6)})[0] == 200
    assert push(sc, "a", seq=4, key="guess", pools={"db": pool(checkouts=100)})[0] == 409
    assert checkouts(sc) == 6


# -- groups --------------------------------------------------------------------------------


def test_idle_groups_are_dropped_after_retention_and_make_room(clock: Clock) -> None:
    sc = make(clock, max_groups=2, group_retention=60.0)
    assert push(sc, "a", app="one", interval=1.0)[0] == 200
    assert push(sc, "b", app="two", interval=1.0)[0] == 200
    assert push(sc, "c", app="three") == (429, {"error": "more than 2 (app, pool) groups"})
    assert rejected(sc, "too_many_groups") == 1
    clock.now += 3.5  # both processes expire; their groups idle but kept
    sc.aggregator.expire()
    assert len(sc.aggregator.groups) == 2
    # A new group makes room by dropping the longest idle one, before retention ends.
    assert push(sc, "c", app="three")[0] == 200
    assert sorted(app for app, _ in sc.aggregator.groups) == ["three", "two"]
    clock.now += 60.0
    sc.aggregator.expire()
    assert sorted(app for app, _ in sc.aggregator.groups) == ["three"]
    assert samples(sc, "pool_exporter_groups_dropped_total") == {frozenset(): 2.0}
    assert samples(sc, "pool_exporter_groups") == {frozenset(): 1.0}
    assert sc.counters.rejected["too_many_pools"] == 0


def test_a_dropped_group_starts_again_from_what_its_process_sends(clock: Clock) -> None:
    sc = make(clock, group_retention=10.0)
    assert push(sc, "a", interval=1.0, pools={"db": pool(checkouts=7)})[0] == 200
    clock.now += 4.0
    sc.aggregator.expire()  # retired: its tombstone remembers the 7
    clock.now += 10.0
    sc.aggregator.expire()  # the group is dropped, and the tombstone's record of it
    assert sc.aggregator.groups == {}
    assert push(sc, "a", seq=2, interval=1.0, pools={"db": pool(checkouts=9)})[0] == 200
    assert checkouts(sc) == 9


# -- tombstones and state ----------------------------------------------------------------


def test_tombstones_keep_only_totals_within_a_pool_budget(clock: Clock) -> None:
    sc = make(clock)
    sc.aggregator.tombstones.max_pools = 4
    held = [{"age_seconds": 1.0, "site": "x.py:1 in f", "thread": "t", "leaked": False}] * 50
    fat = {f"db{i}": pool(checkouts=1, held=held) for i in range(3)}
    assert push(sc, "a", final=True, pools=fat)[0] == 200
    (tomb,) = sc.aggregator.tombstones.values()
    assert {(d.info, d.gauges, d.held) == ({}, {}, []) for d in tomb.pools.values()} == {True}
    assert push(sc, "b", final=True, pools=fat)[0] == 200  # 6 records: "a" is forgotten
    assert list(sc.aggregator.tombstones) == ["b"]
    assert sc.aggregator.tombstones.pool_count == 3
    hits = samples(sc, "pool_exporter_limit_hits_total")
    assert hits[frozenset({("limit", "retired_pools")})] == 3


def test_state_bytes_bound_what_live_processes_hold(clock: Clock) -> None:
    sc = make(clock, max_state_bytes=65536)
    held, n = 0, 0
    while held + len(encode(payload(f"p{n}"))) <= 65536:
        assert push(sc, f"p{n}")[0] == 200
        held, n = held + len(encode(payload(f"p{n}"))), n + 1
    assert push(sc, "one-more") == (
        429,
        {"error": "live processes' pushes would exceed 65536 bytes"},
    )
    assert rejected(sc, "state_too_large") == 1
    assert samples(sc, "pool_exporter_state_bytes") == {frozenset(): float(held)}
    assert push(sc, "p0", seq=2, final=True)[0] == 200  # retiring frees its share
    assert push(sc, "one-more")[0] == 200


# -- per-process ceiling -------------------------------------------------------------------


def test_per_process_output_over_max_series_serves_aggregated_series(clock: Clock) -> None:
    # One process is 78 series per pool (plus sqlalchemy_pool_processes), four are 313.
    sc = make(clock, per_process=True, max_series=300)
    assert push(sc, "a", pid=1, pools={"db": pool(checkouts=1)})[0] == 200
    by_process = samples(sc, "sqlalchemy_pool_checkouts_total")
    assert set(by_process) == {
        frozenset({("app", "shop"), ("pool", "db"), ("process", "web-1/1")}),
    }
    assert samples(sc, "pool_exporter_per_process_limited") == {frozenset(): 0.0}
    for pid in range(2, 5):
        assert push(sc, f"p{pid}", pid=pid, pools={"db": pool(checkouts=pid)})[0] == 200
    assert samples(sc, "sqlalchemy_pool_checkouts_total") == {
        frozenset({("app", "shop"), ("pool", "db")}): 10.0
    }
    assert samples(sc, "pool_exporter_per_process_limited") == {frozenset(): 1.0}
    hits = samples(sc, "pool_exporter_limit_hits_total")
    assert hits[frozenset({("limit", "series")})] >= 1
