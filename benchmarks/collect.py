"""Scrape cost of embedded mode: one ``PoolCollector().collect()`` of 100 pools.

What an app pays each time Prometheus scrapes its ``/metrics`` (or its pusher builds a
snapshot): every instrumented pool is read — stats, pool object, info labels — and
turned into metric families. Measured on 100 instrumented SQLite file engines
(QueuePool 5 + 10, leak detection and checkout sites on), each with 20 finished
checkouts and one or two connections held, so every family has samples and the
held-connection scan has work.

Timed, in rounds that take turns so drifts of the machine cancel out:

* ``collect, idle`` — ``PoolCollector().collect()`` with every family's samples walked,
  nothing having happened since the last scrape;
* ``collect, busy`` — the same after every pool did one more checkout (not timed), so
  its counters, wait and use histograms all moved, as on a busy app;
* ``native`` — baseline: ``generate_latest()`` of a registry holding the same series as
  ordinary prometheus_client metric objects (Gauge, Counter, Histogram), what a scrape
  costs when nothing has to be built;
* ``render`` — ``generate_latest()`` of a registry holding only the collector: the whole
  scrape, text format included, to put the collect in proportion.

Before those, ``one pool`` times the idle collect with a single pool instrumented, x100:
the ratio shows what is per pool and what per scrape. Times are the median of wall
clock and, in brackets, of the thread's CPU time (what other processes on a shared
machine cannot inflate).
Run it with ``python benchmarks/collect.py [--pools N] [--rounds R]``.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import prometheus_client
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from sqlalchemy import Engine, create_engine, text

import sqlalchemy_pool_exporter
from sqlalchemy_pool_exporter.instrumentation.histogram import DEFAULT_BUCKETS
from sqlalchemy_pool_exporter.protocol.catalog import INFO_LABELS, POOL_METRICS


def make_pools(directory: Path, first: int, count: int) -> list[tuple[Engine, list[Any]]]:
    """``count`` instrumented engines, each with 20 finished checkouts and 1 or 2 held."""
    made = []
    for i in range(first, first + count):
        # Bounded and recycling: every series of the catalog is present, as in the baseline.
        engine = create_engine(
            f"sqlite:///{directory / f'{i}.db'}", pool_size=5, max_overflow=10, pool_recycle=3600
        )
        sqlalchemy_pool_exporter.instrument(
            engine, name=f"pool-{i}", registry=None, leak_threshold=3600
        )
        for _ in range(20):
            with engine.connect() as conn:
                conn.execute(text("SELECT 1"))
        held = [engine.connect() for _ in range(1 + i % 2)]
        made.append((engine, held))
    return made


def consume(collector: Any) -> int:
    """Samples of one full collect, every family and sample list walked."""
    return sum(len(family.samples) for family in collector.collect())


def native_registry(pools: int) -> CollectorRegistry:
    """The same series held by ordinary prometheus_client metric objects."""
    disable_created = getattr(prometheus_client, "disable_created_metrics", None)
    if disable_created is not None:  # no ``_created`` series: the same samples as ours
        disable_created()
    registry = CollectorRegistry()
    for row in POOL_METRICS:
        labels = ["pool", *row.labels]
        if row.kind == "counter":
            metric: Any = Counter(row.name, row.help, labels, registry=registry)
        elif row.kind == "histogram":
            metric = Histogram(
                row.name, row.help, labels, registry=registry, buckets=DEFAULT_BUCKETS
            )
        elif row.kind == "info":
            metric = Gauge(row.name, row.help, ["pool", *INFO_LABELS], registry=registry)
        else:
            metric = Gauge(row.name, row.help, labels, registry=registry)
        for p in range(pools):
            if row.kind == "info":
                metric.labels(f"pool-{p}", *(["x"] * len(INFO_LABELS))).set(1)
                continue
            for values, _field in row.fields:
                child = metric.labels(f"pool-{p}", *values)
                if row.kind == "counter":
                    child.inc(3)
                elif row.kind == "histogram":
                    child.observe(0.0002)
                else:
                    child.set(1)
    return registry


def timed(fn: Callable[[], object]) -> tuple[float, float]:
    """Milliseconds of one call: wall clock, and this thread's CPU time."""
    c0, t0 = time.thread_time_ns(), time.perf_counter_ns()
    fn()
    return (time.perf_counter_ns() - t0) / 1e6, (time.thread_time_ns() - c0) / 1e6


def checkout_each(pools: list[tuple[Engine, list[Any]]]) -> None:
    """One checkout and checkin on every pool: what a scrape interval of traffic moves."""
    for engine, _held in pools:
        engine.raw_connection().close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pools", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=300)
    args = parser.parse_args()
    n = args.pools
    collector = sqlalchemy_pool_exporter.PoolCollector()

    with tempfile.TemporaryDirectory() as tmp:
        pools = make_pools(Path(tmp), 0, 1)
        for _ in range(20):
            consume(collector)
        one = [timed(lambda: [consume(collector) for _ in range(n)]) for _ in range(30)]
        pools += make_pools(Path(tmp), 1, n - 1)
        ours = CollectorRegistry()
        ours.register(collector)
        native = native_registry(n)
        samples = consume(collector)
        assert samples == sum(len(f.samples) for f in native.collect()), "series differ"

        variants: dict[str, Callable[[], object]] = {
            "idle": lambda: consume(collector),
            "busy": lambda: consume(collector),
            "native": lambda: generate_latest(native),
            "render": lambda: generate_latest(ours),
        }
        for fn in variants.values():  # warm up
            for _ in range(10):
                fn()
        times: dict[str, list[tuple[float, float]]] = {name: [] for name in variants}
        gc.collect()
        names = list(variants)
        for r in range(args.rounds):
            for name in names[r % 4 :] + names[: r % 4]:
                if name == "busy":
                    checkout_each(pools)
                elif name == "idle":
                    consume(collector)  # the scrape before: nothing happens in between
                times[name].append(timed(variants[name]))

        for engine, held in pools:
            for conn in held:
                conn.close()
            sqlalchemy_pool_exporter.uninstrument(engine)
            engine.dispose()

    def med(runs: list[tuple[float, float]]) -> tuple[float, float]:
        return statistics.median(w for w, _ in runs), statistics.median(c for _, c in runs)

    idle, busy, nat, render, single = (
        med(times["idle"]),
        med(times["busy"]),
        med(times["native"]),
        med(times["render"]),
        med(one),
    )
    print(f"{n} pools, {samples} samples per scrape; median of {args.rounds} rounds, ms")
    for label, (wall, cpu) in (
        ("collect, idle pools", idle),
        ("collect, busy pools", busy),
        ("native objects, generate_latest", nat),
        ("collector, generate_latest", render),
    ):
        print(f"  {label:34s} {wall:7.3f} ({cpu:7.3f})   {wall * 1000 / n:6.1f} us/pool")
    print(f"  {'one pool, collect x' + str(n):34s} {single[0]:7.3f} ({single[1]:7.3f})")
    print(
        f"ratios: busy collect / native render x{busy[0] / nat[0]:.2f};"
        f" {n} pools in one collect / one pool x{n}: x{idle[0] / single[0]:.2f}"
    )


if __name__ == "__main__":
    main()
