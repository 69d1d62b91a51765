"""Hot-path cost of instrumentation: nanoseconds per checkout+checkin cycle.

Three engines on the same SQLite file, measured in one run, interleaved round by round
so that machine noise hits all of them alike:

* ``none``      — no instrumentation (the baseline);
* ``exporter``  — ``exporter.instrument(engine)`` with default options (leak detection
  and checkout-site capture on);
* ``naive``     — the obvious prometheus_client version: a labelled Gauge ``inc``/``dec``
  and ``Histogram.observe`` in checkout/checkin listeners.

Two cycles are timed: ``raw_connection(); close()`` (the pool alone) and
``with engine.connect(): pass`` (what Session and Core do). Each figure is the median of
the rounds; the ratio and the added nanoseconds are against ``none``. Run it with
``python benchmarks/overhead.py [--cycles N] [--rounds R]``.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from prometheus_client import CollectorRegistry, Gauge, Histogram
from sqlalchemy import Engine, create_engine, event

import exporter


def naive_instrument(engine: Engine, registry: CollectorRegistry) -> None:
    """What most people write first: metric objects touched inside the listeners."""
    in_use = Gauge("naive_pool_checked_out", "checked out", ["pool"], registry=registry)
    held = Histogram("naive_pool_use_seconds", "use", ["pool"], registry=registry)

    @event.listens_for(engine, "checkout")
    def checkout(dbapi_connection: object, record: object, proxy: object) -> None:
        in_use.labels("bench").inc()
        record.info["naive_t0"] = time.perf_counter()  # type: ignore[attr-defined]

    @event.listens_for(engine, "checkin")
    def checkin(dbapi_connection: object, record: object) -> None:
        in_use.labels("bench").dec()
        t0 = record.info.pop("naive_t0", None)  # type: ignore[attr-defined]
        if t0 is not None:
            held.labels("bench").observe(time.perf_counter() - t0)


def raw_cycle(engine: Engine, n: int) -> float:
    """ns per ``raw_connection(); close()``."""
    t0 = time.perf_counter_ns()
    for _ in range(n):
        engine.raw_connection().close()
    return (time.perf_counter_ns() - t0) / n


def connect_cycle(engine: Engine, n: int) -> float:
    """ns per ``with engine.connect(): pass``."""
    t0 = time.perf_counter_ns()
    for _ in range(n):
        with engine.connect():
            pass
    return (time.perf_counter_ns() - t0) / n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cycles", type=int, default=20000, help="cycles per round")
    parser.add_argument("--rounds", type=int, default=15, help="interleaved rounds")
    args = parser.parse_args()

    tmp = tempfile.TemporaryDirectory()
    url = f"sqlite:///{Path(tmp.name) / 'bench.db'}"
    engines = {name: create_engine(url, pool_size=5) for name in ("none", "exporter", "naive")}
    exporter.instrument(engines["exporter"], name="bench", registry=CollectorRegistry())
    naive_instrument(engines["naive"], CollectorRegistry())

    cycles: dict[str, Callable[[Engine, int], float]] = {
        "raw_connection(); close()": raw_cycle,
        "with engine.connect(): pass": connect_cycle,
    }
    for label, cycle in cycles.items():
        for engine in engines.values():  # warm up: open the connection, fill caches
            cycle(engine, 2000)
        results: dict[str, list[float]] = {name: [] for name in engines}
        for _ in range(args.rounds):
            for name, engine in engines.items():
                results[name].append(cycle(engine, args.cycles))
        base = statistics.median(results["none"])
        print(f"\n{label}  ({args.rounds} rounds x {args.cycles} cycles, median ns/cycle)")
        print(f"  {'variant':<10} {'ns/cycle':>10} {'added ns':>10} {'ratio':>7}")
        for name in engines:
            med = statistics.median(results[name])
            print(f"  {name:<10} {med:>10.0f} {med - base:>+10.0f} {med / base:>7.2f}x")
    stats = exporter.instrumentations()[0].stats
    print(f"\nexporter counted {stats.checkouts} checkouts, {len(stats.held)} still held")
    for engine in engines.values():
        engine.dispose()
    tmp.cleanup()


if __name__ == "__main__":
    main()
