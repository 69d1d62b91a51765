"""Families from snapshots: a scrape that reuses last scrape's samples serves the same text.

The embedded collector and the sidecar keep each pool's label dicts and last samples
in a :class:`SeriesCache`; whatever moved between two scrapes must show, whatever did
not is served again as it was.
"""

from __future__ import annotations

import copy
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.registry import Collector

from sqlalchemy_pool_exporter.exposition import SeriesCache, pool_families
from tests.unit.sidecar_payloads import histogram, pool


class Families(Collector):
    """A collector serving ``pool_families`` of the snapshots it is given."""

    def __init__(self, cache: SeriesCache | None) -> None:
        self.cache = cache
        self.items: list[tuple[tuple[str, ...], dict[str, Any]]] = []

    def collect(self) -> Any:
        return pool_families(("app", "pool"), self.items, self.cache)


def scrape(collector: Families) -> str:
    registry = CollectorRegistry()
    registry.register(collector)
    return generate_latest(registry).decode()


def test_cached_scrapes_equal_fresh_ones_as_values_move() -> None:
    cached, fresh = Families(SeriesCache()), Families(None)
    first = pool(checkouts=3, gauges={"checked_out": 1, "idle": 4})
    states = [first, copy.deepcopy(first)]  # nothing moved
    moved = copy.deepcopy(first)
    moved["gauges"]["checked_out"] = 2
    moved["counters"]["leaks"] = 1
    moved["histograms"]["use_seconds"] = histogram([0, 2] + [0] * 15, total=0.002)
    moved["info"]["pre_ping"] = "true"
    states.append(moved)
    unbounded = copy.deepcopy(moved)
    unbounded["gauges"].update(size=None, max_overflow=None, max_connections=None)
    states.append(unbounded)  # series that disappear
    states.append(copy.deepcopy(moved))  # and come back
    for state in states:
        for collector in (cached, fresh):
            collector.items = [(("shop", "db"), state), (("shop", "other"), pool(checkouts=1))]
        assert scrape(cached) == scrape(fresh)
    text = scrape(cached)
    assert 'sqlalchemy_pool_connections{app="shop",pool="db",state="checked_out"} 2.0' in text
    assert 'sqlalchemy_pool_leaks_total{app="shop",pool="db"} 1.0' in text
    assert 'sqlalchemy_pool_use_seconds_bucket{app="shop",le="0.001",pool="db"} 2.0' in text
    assert 'pre_ping="true"' in text


def test_samples_that_did_not_move_are_served_again() -> None:
    cache = SeriesCache()
    items = [(("shop", "db"), pool(checkouts=3))]
    before = pool_families(("app", "pool"), items, cache)
    after = pool_families(("app", "pool"), copy.deepcopy(items), cache)
    for a, b in zip(before, after, strict=True):
        assert len(a.samples) == len(b.samples)
        assert all(x is y for x, y in zip(a.samples, b.samples, strict=True)), a.name


def test_the_cache_is_bounded() -> None:
    cache = SeriesCache(limit=3)
    for n in range(10):
        pool_families(("app", "pool"), [(("shop", f"db{n}"), pool())], cache)
    assert len(cache._entries) <= 3
