"""Hot-path cost of instrumentation: nanoseconds per checkout+checkin cycle.

Three engines on the same SQLite file, measured in one run:

* ``none``      — no instrumentation (the baseline);
* ``exporter``  — ``sqlalchemy_pool_exporter.instrument(engine)`` with default options
  (leak detection and checkout-site capture on);
* ``otel``      — the same with ``meter_provider=`` an OpenTelemetry SDK MeterProvider
  (an in-memory reader): OTel on. The worker also times what a collection costs per
  checkout+checkin it replays into the OpenTelemetry histograms (``replay ns``), and one
  SDK ``Histogram.record()`` (``record ns``), what recording on the hot path would cost;
* ``run``       — an engine instrumented by ``sqlalchemy-pool-exporter run``'s hook
  (``autoinstrument``) instead of an explicit ``instrument()``;
* ``naive``     — the obvious prometheus_client version: a labelled Gauge ``inc``/``dec``
  and ``Histogram.observe`` in checkout/checkin listeners.

Two cycles are timed: ``raw_connection(); close()`` (the pool alone) and
``with engine.connect(): pass`` (what Session and Core do). The engines take turns
round by round (the order rotating), and a variant's cost is the median over rounds of
its time minus the baseline's time *in the same round*, so drifts of the machine cancel
out. Memory layout differs from one interpreter to the next (by ±5 % here), so the whole
measurement runs in several fresh processes and each is printed, then the median. The
processes are pinned to one CPU where the OS allows it: a process moved between cores
mid-round was the largest remaining source of spread.
Run it with ``python benchmarks/overhead.py [--processes P] [--rounds R] [--cycles N]``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from prometheus_client import CollectorRegistry, Gauge, Histogram
from sqlalchemy import Engine, create_engine, event

import sqlalchemy_pool_exporter
from sqlalchemy_pool_exporter.instrumentation import autoinstrument


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


VARIANTS = ("exporter", "otel", "run", "naive")
CYCLES: dict[str, Callable[[Engine, int], float]] = {
    "raw_connection(); close()": raw_cycle,
    "with engine.connect(): pass": connect_cycle,
}


def variant_engine(variant: str, url: str, name: str = "bench") -> tuple[Engine, Any]:
    """The engine of ``variant`` (created after the baseline's), and its OTel reader if any."""
    if variant == "run":
        autoinstrument.install()  # SQLAlchemy is loaded: every engine from now on
        return create_engine(url, pool_size=5), None
    engine = create_engine(url, pool_size=5)
    if variant == "naive":
        naive_instrument(engine, CollectorRegistry())
        return engine, None
    reader = None
    provider = None
    if variant == "otel":
        reader = InMemoryMetricReader()
        provider = MeterProvider(metric_readers=[reader])
    sqlalchemy_pool_exporter.instrument(
        engine, name=name, registry=CollectorRegistry(), meter_provider=provider
    )
    return engine, reader


def otel_costs(url: str, cycles: int) -> dict[str, list[float]]:
    """ns per replayed checkout+checkin in a collection, and per SDK ``Histogram.record()``."""
    # An engine and provider of their own: the rounds' backlog is not what is measured.
    engine, reader = variant_engine("otel", url, name="replay")
    reader.get_metrics_data()
    raw_cycle(engine, cycles)
    t0 = time.perf_counter_ns()
    reader.get_metrics_data()
    replay = (time.perf_counter_ns() - t0) / cycles
    engine.dispose()
    provider = MeterProvider(metric_readers=[InMemoryMetricReader()])
    histogram = provider.get_meter("bench").create_histogram("bench", unit="s")
    attributes = {"db.client.connection.pool.name": "bench"}
    t0 = time.perf_counter_ns()
    for _ in range(cycles):
        histogram.record(0.0002, attributes)
    record = (time.perf_counter_ns() - t0) / cycles
    return {"replay": [replay], "record": [record]}


def measure(variant: str, rounds: int, cycles: int) -> dict[str, list[float]]:
    """In this process: per cycle kind, [baseline ns, ns added by ``variant``]."""
    tmp = tempfile.TemporaryDirectory()
    url = f"sqlite:///{Path(tmp.name) / 'bench.db'}"
    engines = {"none": create_engine(url, pool_size=5)}
    engines[variant], reader = variant_engine(variant, url)
    out: dict[str, list[float]] = {}
    for label, cycle in CYCLES.items():
        for engine in engines.values():  # warm up: open the connection, fill caches
            cycle(engine, 2000)
        times: dict[str, list[float]] = {name: [] for name in engines}
        for r in range(rounds):
            for name in ("none", variant) if r % 2 else (variant, "none"):
                times[name].append(cycle(engines[name], cycles))
        pairs = zip(times[variant], times["none"], strict=True)
        out[label] = [statistics.median(times["none"]), statistics.median(t - b for t, b in pairs)]
    if variant != "naive":
        (stats,) = [i.stats for i in sqlalchemy_pool_exporter.instrumentations()]
        assert stats.checkouts == len(CYCLES) * (2000 + rounds * cycles) and not stats.held
    if reader is not None:
        out |= otel_costs(url, min(cycles, 5000))
    for engine in engines.values():
        engine.dispose()
    tmp.cleanup()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--processes", type=int, default=5, help="fresh processes per variant")
    parser.add_argument("--rounds", type=int, default=20, help="rounds per process")
    parser.add_argument("--cycles", type=int, default=10000, help="cycles per round")
    parser.add_argument(
        "--variants",
        default=",".join(VARIANTS),
        help=f"comma-separated subset of {','.join(VARIANTS)} (default: all)",
    )
    parser.add_argument("--worker", choices=VARIANTS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    variants = tuple(v for v in VARIANTS if v in args.variants.split(","))
    if not variants or set(args.variants.split(",")) - set(VARIANTS):
        parser.error(f"--variants: choose from {','.join(VARIANTS)}")
    if hasattr(os, "sched_setaffinity"):  # children inherit it
        os.sched_setaffinity(0, {max(os.sched_getaffinity(0))})
    if args.worker:
        print(json.dumps(measure(args.worker, args.rounds, args.cycles)))
        return

    runs: dict[str, list[dict[str, list[float]]]] = {name: [] for name in variants}
    for _ in range(args.processes):
        for name in variants:
            worker = [
                sys.executable,
                __file__,
                f"--worker={name}",
                f"--rounds={args.rounds}",
                f"--cycles={args.cycles}",
            ]
            done = subprocess.run(worker, check=True, capture_output=True, text=True)
            runs[name].append(json.loads(done.stdout))
    print(
        f"each variant: {args.processes} processes x {args.rounds} rounds x {args.cycles} "
        "cycles, turn about with an uninstrumented engine;\nadded = median over rounds of "
        "(variant - none) in the same round; ns/cycle and ratio use the median of those"
    )
    for label in CYCLES:
        print(f"\n{label}")
        print(f"  {'variant':<10} {'ns/cycle':>9} {'added ns':>9} {'ratio':>6}   per process")
        base = statistics.median(run[label][0] for name in variants for run in runs[name])
        print(f"  {'none':<10} {base:>9.0f} {0:>+9.0f} {1:>5.2f}x")
        for name in variants:
            added = [run[label][1] for run in runs[name]]
            mid = statistics.median(added)
            each = " ".join(f"{a:+.0f}" for a in added)
            print(
                f"  {name:<10} {base + mid:>9.0f} {mid:>+9.0f} {(base + mid) / base:>5.2f}x"
                f"   {each}"
            )
    for key, text in OTEL_COSTS.items() if "otel" in variants else ():
        each_ns = [run[key][0] for run in runs["otel"]]
        print(
            f"\n{text}: {statistics.median(each_ns):.0f} ns"
            f"   per process: {' '.join(f'{v:.0f}' for v in each_ns)}"
        )


#: The OTel worker's extra figures: what a collection costs per replayed cycle, and what
#: recording on the hot path would cost (one record per histogram: two per cycle).
OTEL_COSTS = {
    "replay": "OTel on, collection: replaying one checkout+checkin (wait + use)",
    "record": "OTel SDK Histogram.record(), once (the hot path would need two per cycle)",
}


if __name__ == "__main__":
    main()
