"""Aggregation across processes: sums, maxima, retirement, expiry, resurrection."""

from __future__ import annotations

from typing import Any

import pytest

from sqlalchemy_pool_exporter.sidecar.api import api_document
from sqlalchemy_pool_exporter.sidecar.server import Sidecar
from sqlalchemy_pool_exporter.sidecar.settings import SidecarSettings
from sqlalchemy_pool_exporter.sidecar.views import aggregated_items, per_process_items
from tests.unit.sidecar_ingest import Clock, push
from tests.unit.sidecar_payloads import pool


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def sc(clock: Clock) -> Sidecar:
    """A sidecar that is never started: pushes go straight to ``ingest``."""
    return Sidecar(SidecarSettings(max_processes=3), clock=clock)


def agg(sc: Sidecar, app: str = "shop", name: str = "db") -> dict[str, Any]:
    items, counts = aggregated_items(sc.aggregator)
    found = {labels: item for labels, item in items}
    item = dict(found[(app, name)])
    item["processes"] = {(a, p): n for a, p, n in counts}[(app, name)]
    return item


def test_counters_sum_over_processes_and_keep_retired(sc: Sidecar) -> None:
    assert push(sc, "a", pools={"db": pool(checkouts=3)}) == (200, {"status": "accepted"})
    assert push(sc, "b", pools={"db": pool(checkouts=4)})[0] == 200
    assert agg(sc)["counters"]["checkouts"] == 7
    assert push(sc, "a", seq=2, pools={"db": pool(checkouts=10)})[0] == 200
    assert agg(sc)["counters"]["checkouts"] == 14
    assert agg(sc)["histograms"]["wait_seconds"]["count"] == 14
    # final push at exit: gauges gone at once, totals kept
    assert push(sc, "a", seq=3, final=True, pools={"db": pool(checkouts=11)})[0] == 200
    item = agg(sc)
    assert item["counters"]["checkouts"] == 15
    assert item["processes"] == 1
    assert sc.aggregator.live_count() == 1


def test_gauges_sum_and_max_as_spec_says(sc: Sidecar) -> None:
    push(
        sc,
        "a",
        pools={
            "db": pool(
                gauges={
                    "checked_out": 2,
                    "idle": 3,
                    "pending": 1,
                    "overflow": 0,
                    "utilization_ratio": 2 / 15,
                    "peak_utilization_ratio": 0.5,
                    "oldest_checkout_seconds": 4.0,
                    "oldest_wait_seconds": 0.25,
                    "leaked_connections": 1,
                }
            )
        },
    )
    push(
        sc,
        "b",
        pools={
            "db": pool(
                gauges={
                    "checked_out": 5,
                    "idle": 0,
                    "pending": 2,
                    "overflow": 1,
                    "utilization_ratio": 5 / 15,
                    "peak_utilization_ratio": 0.4,
                    "oldest_checkout_seconds": 9.5,
                    "oldest_wait_seconds": 0.125,
                    "leaked_connections": 0,
                }
            )
        },
    )
    g = agg(sc)["gauges"]
    assert (g["checked_out"], g["idle"], g["pending"], g["overflow"]) == (7, 3, 3, 1)
    assert (g["size"], g["max_overflow"], g["max_connections"]) == (10, 20, 30)
    assert g["utilization_ratio"] == 5 / 15
    assert g["peak_utilization_ratio"] == 0.5
    assert g["oldest_checkout_seconds"] == 9.5
    assert g["oldest_wait_seconds"] == 0.25
    assert g["leaked_connections"] == 1


def test_max_connections_absent_when_any_live_pool_is_unbounded(sc: Sidecar) -> None:
    push(sc, "a")
    push(
        sc,
        "b",
        pools={
            "db": pool(
                gauges={
                    "max_overflow": -1,
                    "max_connections": None,
                    "utilization_ratio": None,
                    "peak_utilization_ratio": None,
                }
            )
        },
    )
    g = agg(sc)["gauges"]
    assert g["max_connections"] is None
    assert g["max_overflow"] == -1
    assert g["utilization_ratio"] == 0.0  # the bounded process still has one
    push(sc, "b", seq=2, final=True, pools={"db": pool()})
    assert agg(sc)["gauges"]["max_connections"] == 15


def test_expiry_after_factor_times_own_interval(
    sc: Sidecar, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("INFO", logger="sqlalchemy_pool_exporter")
    push(sc, "fast", interval=1.0, pools={"db": pool(checkouts=5, gauges={"checked_out": 1})})
    push(sc, "slow", interval=10.0, pools={"db": pool(checkouts=2, gauges={"checked_out": 2})})
    clock.now += 3.0
    sc.aggregator.expire()
    assert agg(sc)["processes"] == 2
    clock.now += 0.01
    sc.aggregator.expire()
    item = agg(sc)
    assert item["processes"] == 1
    assert item["gauges"]["checked_out"] == 2
    assert item["counters"]["checkouts"] == 7
    assert sc.aggregator.expired_total == 1
    (record,) = [r for r in caplog.records if r.msg.startswith("process expired")]
    assert record.msg == "process expired app=shop process=web-1/100 silent_seconds=3.0 pools=1"
    clock.now += 30
    sc.aggregator.expire()
    item = agg(sc)
    assert item["processes"] == 0
    assert item["counters"]["checkouts"] == 7
    assert item["gauges"]["checked_out"] == 0
    assert item["gauges"]["max_connections"] is None  # no live process, no configuration
    assert item["gauges"]["utilization_ratio"] is None


def test_expired_process_that_comes_back_is_not_counted_twice(sc: Sidecar, clock: Clock) -> None:
    push(sc, "a", interval=1.0, pools={"db": pool(checkouts=5)})
    push(sc, "b", interval=100.0, pools={"db": pool(checkouts=1)})
    clock.now += 4
    sc.aggregator.expire()
    assert agg(sc)["processes"] == 1
    assert agg(sc)["counters"]["checkouts"] == 6
    # it was only paused: its cumulative 8 replaces the retired 5
    assert push(sc, "a", seq=2, interval=1.0, pools={"db": pool(checkouts=8)})[0] == 200
    assert agg(sc)["counters"]["checkouts"] == 9
    assert agg(sc)["processes"] == 2
    # and its old seq is still remembered while retired
    clock.now += 4
    sc.aggregator.expire()
    assert push(sc, "a", seq=2, interval=1.0, pools={"db": pool(checkouts=9)})[0] == 409
    assert agg(sc)["counters"]["checkouts"] == 9


def test_pool_missing_from_a_push_is_retired(sc: Sidecar) -> None:
    push(sc, "a", pools={"db": pool(checkouts=4), "cache": pool(checkouts=2)})
    push(sc, "a", seq=2, pools={"db": pool(checkouts=5)})
    assert agg(sc, name="cache")["counters"]["checkouts"] == 2
    assert agg(sc, name="cache")["processes"] == 0
    # the pool comes back (a new engine): it counts from its new values
    push(sc, "a", seq=3, pools={"db": pool(checkouts=5), "cache": pool(checkouts=1)})
    assert agg(sc, name="cache")["counters"]["checkouts"] == 3


def test_apps_are_separate(sc: Sidecar) -> None:
    push(sc, "a", app="shop", pools={"db": pool(checkouts=1)})
    push(sc, "b", app="admin", pools={"db": pool(checkouts=2)})
    assert agg(sc, "shop")["counters"]["checkouts"] == 1
    assert agg(sc, "admin")["counters"]["checkouts"] == 2


def test_per_process_series_of_a_retired_process_stay_frozen_then_go(clock: Clock) -> None:
    sc = Sidecar(SidecarSettings(per_process=True, retired_retention=60), clock=clock)
    push(sc, "a", pid=1, interval=100, pools={"db": pool(checkouts=3, gauges={"checked_out": 1})})
    push(sc, "b", pid=2, pools={"db": pool(checkouts=4, gauges={"checked_out": 2})})
    push(sc, "b", pid=2, seq=2, final=True, pools={"db": pool(checkouts=6)})

    def series() -> dict[str, tuple[int, int, dict[str, Any], dict[str, Any]]]:
        items, counts = per_process_items(sc.aggregator)
        assert counts == [("shop", "db", 1)]
        return {
            labels[2]: (
                item["counters"]["checkouts"],
                item["histograms"]["wait_seconds"]["count"],
                item["gauges"],
                item["info"],
            )
            for labels, item in items
        }

    got = series()
    assert set(got) == {"web-1/1", "web-1/2"}  # no "retired" series any more
    assert got["web-1/1"][:2] == (3, 3) and got["web-1/1"][2]["checked_out"] == 1
    assert got["web-1/2"] == (6, 6, {}, {})  # frozen: counts kept, no gauges, no info
    clock.now += 59.9
    sc.aggregator.expire()
    assert series()["web-1/2"] == (6, 6, {}, {})
    clock.now += 0.2
    sc.aggregator.expire()
    assert set(series()) == {"web-1/1"}
    assert agg(sc)["counters"]["checkouts"] == 9  # the aggregated total keeps it


def test_per_process_series_continue_when_a_pid_is_reused(clock: Clock) -> None:
    # a restarted container: new processes (new instances) with the same host/pid labels
    sc = Sidecar(SidecarSettings(per_process=True), clock=clock)
    push(sc, "a", pid=7, pools={"db": pool(checkouts=5)})
    push(sc, "a", pid=7, seq=2, final=True, pools={"db": pool(checkouts=8)})
    push(sc, "a2", pid=7, pools={"db": pool(checkouts=2)})
    items, _ = per_process_items(sc.aggregator)
    # one series, still going up: 8 from the first process, 2 from the second
    assert [(labels, item["counters"]["checkouts"]) for labels, item in items] == [
        (("shop", "db", "web-1/7"), 10)
    ]
    assert agg(sc)["counters"]["checkouts"] == 10


def test_api_document_lists_processes_held_connections_and_sites(sc: Sidecar) -> None:
    held = [
        {"age_seconds": 40.0, "site": "app/views.py:42 in order", "thread": "w-1", "leaked": True},
        {"age_seconds": 1.0, "site": "app/views.py:10 in index", "thread": "w-2", "leaked": False},
    ]
    push(sc, "a", pid=7, pools={"db": pool(held=held)})
    push(sc, "b", pid=8, pools={"db": pool(held=held[:1])})
    doc = api_document(sc.aggregator)
    assert [p["process"] for p in doc["processes"]] == ["web-1/7", "web-1/8"]
    (entry,) = doc["pools"]
    assert (entry["app"], entry["pool"], entry["processes"]) == ("shop", "db", 2)
    assert entry["sites"][0] == {
        "site": "app/views.py:42 in order",
        "held": 2,
        "leaked": 2,
        "oldest_seconds": 40.0,
    }
    assert [h["age_seconds"] for h in entry["held"]] == [40.0, 40.0, 1.0]


def test_pool_restarting_from_zero_is_a_reset_not_a_loss(sc: Sidecar) -> None:
    push(sc, "a", pools={"db": pool(checkouts=10)})
    push(sc, "b", pools={"db": pool(checkouts=1)})
    # uninstrument + instrument between two pushes: same name, counters from zero
    assert push(sc, "a", seq=2, pools={"db": pool(checkouts=2)}) == (200, {"status": "accepted"})
    assert agg(sc)["counters"]["checkouts"] == 13
    assert push(sc, "a", seq=3, pools={"db": pool(checkouts=4)})[0] == 200
    assert agg(sc)["counters"]["checkouts"] == 15
    assert sc.aggregator.resets_total == 1
    assert agg(sc)["processes"] == 2
