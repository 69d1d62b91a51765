"""Sidecar at scale, side by side, in one run.

1. **Push ingest**: a real ``serve`` subprocess; 64 concurrent pushers (4 client
   processes x 16 threads, HTTP/1.1 keep-alive) each sending 10-pool snapshots as fast as
   they are answered, for ``--seconds``. Target ≥ 2,000 pushes/s on 2 cores.
2. **/metrics render** with 1,000 live processes x 10 pools loaded: the sidecar's
   ``/metrics`` over HTTP (and its collector in-process), against prometheus_client's
   multiprocess mode holding the same data (one set of ``.db`` files per process, read by
   ``MultiProcessCollector``). Target ≤ 50 ms and ≥ 10x faster.
3. **RSS** of the sidecar process at that scale. Target ≤ 150 MB.
4. **Sidecar absent**: latency of an instrumented request (``with engine.connect():
   SELECT 1`` on SQLite) with no push, with pushes to a closed port, and to a port that
   accepts but never answers — each in a fresh process, pushing every 50 ms.

Run: ``python benchmarks/sidecar.py [--seconds 5] [--processes 1000]``.
"""

from __future__ import annotations

import argparse
import http.client
import json
import multiprocessing
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sqlalchemy_pool_exporter.protocol.catalog import POOL_METRICS  # noqa: E402
from tests.sidecar_log import serve_command, watch_listening  # noqa: E402

# snapshot field -> (metric name, help) of the catalog's unlabelled pool series
GAUGES, COUNTERS, HISTOGRAMS = (
    {
        f: (m.name, m.help)
        for m in POOL_METRICS
        if m.kind == kind and not m.labels
        for _, f in m.fields
    }
    for kind in ("gauge", "counter", "histogram")
)

POOLS = 10
SENTINEL = 987654321


def sample_pool() -> dict[str, Any]:
    """A realistic pool snapshot taken from a real instrumented SQLite engine."""
    from sqlalchemy import create_engine, text

    import sqlalchemy_pool_exporter
    from sqlalchemy_pool_exporter.instrumentation.registry import instrumentations
    from sqlalchemy_pool_exporter.instrumentation.snapshot import pool_snapshot

    with tempfile.TemporaryDirectory() as tmp:
        engine = create_engine(f"sqlite:///{tmp}/b.db", pool_size=5, max_overflow=10)
        sqlalchemy_pool_exporter.instrument(engine, name="sample", registry=None)
        for _ in range(50):
            with engine.connect() as conn:
                conn.execute(text("select 1"))
        (inst,) = [i for i in instrumentations() if i.engine is engine]
        snap = pool_snapshot(inst)
        sqlalchemy_pool_exporter.uninstrument(engine)
        engine.dispose()
    assert snap is not None
    return snap


def body_template(instance: str, pool: dict[str, Any], pid: int, interval: float) -> bytes:
    doc = {
        "schema": 1,
        "seq": SENTINEL,
        "interval": interval,
        "final": False,
        "sent_at": time.time(),
        "process": {
            "instance": instance,
            "pid": pid,
            "host": "bench",
            "app": "bench",
            "started_at": time.time(),
        },
        "pools": {f"pool{i}": pool for i in range(POOLS)},
    }
    return json.dumps(doc, separators=(",", ":")).encode().replace(str(SENTINEL).encode(), b"%d")


def start_sidecar(*flags: str) -> tuple[subprocess.Popen[str], str, str]:
    proc = subprocess.Popen(serve_command(*flags), stderr=subprocess.PIPE, text=True, cwd=ROOT)
    assert proc.stderr is not None
    event, lines = watch_listening(proc.stderr)
    if not event:
        proc.kill()
        raise RuntimeError("sidecar did not start: " + " | ".join(lines[-5:]))
    return proc, event["metrics"], event["push"]


def pusher_process(
    push_url: str, first: int, threads: int, seconds: float, pool: dict[str, Any], out: Any
) -> None:
    host, port = push_url.split("//")[1].split("/")[0].split(":")
    counts = [0] * threads
    errors = [0] * threads

    def run(k: int) -> None:
        template = body_template(f"push-{first + k}", pool, first + k, 3600.0)
        conn = http.client.HTTPConnection(host, int(port), timeout=30)
        deadline = time.monotonic() + seconds
        seq = 0
        while time.monotonic() < deadline:
            seq += 1
            conn.request(
                "POST",
                "/v1/push",
                body=template % seq,
                headers={"Content-Type": "application/json"},
            )
            response = conn.getresponse()
            response.read()
            if response.status == 200:
                counts[k] += 1
            else:
                errors[k] += 1
        conn.close()

    workers = [threading.Thread(target=run, args=(k,)) for k in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    out.put((sum(counts), sum(errors)))


def ingest(push_url: str, pool: dict[str, Any], seconds: float) -> tuple[float, int]:
    queue: Any = multiprocessing.Queue()
    procs = [
        multiprocessing.Process(
            target=pusher_process, args=(push_url, 16 * i, 16, seconds, pool, queue)
        )
        for i in range(4)
    ]
    start = time.monotonic()
    for p in procs:
        p.start()
    results = [queue.get() for _ in procs]
    for p in procs:
        p.join()
    elapsed = time.monotonic() - start
    return sum(r[0] for r in results) / elapsed, sum(r[1] for r in results)


def load(push_url: str, pool: dict[str, Any], processes: int) -> None:
    def one(k: int) -> None:
        body = body_template(f"load-{k}", pool, 100_000 + k, 3600.0) % 1
        request = urllib.request.Request(push_url, data=body, method="POST")
        with urllib.request.urlopen(request, timeout=30) as response:
            assert response.status == 200

    with ThreadPoolExecutor(8) as executor:
        list(executor.map(one, range(processes)))


def timed(fn: Any, rounds: int) -> float:
    """Median wall time of ``fn`` in milliseconds."""
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def multiprocess_render(pool: dict[str, Any], processes: int) -> tuple[float, int]:
    """prometheus_client multiprocess mode with the same data: (ms per render, files)."""
    from prometheus_client import CollectorRegistry, generate_latest
    from prometheus_client.mmap_dict import MmapedDict, mmap_key
    from prometheus_client.multiprocess import MultiProcessCollector

    with tempfile.TemporaryDirectory() as path:
        labels = ["app", "pool"]
        for pid in range(processes):
            files = {
                name: MmapedDict(os.path.join(path, f"{name}_{pid}.db"))
                for name in ("counter", "histogram", "gauge_livesum", "gauge_livemax")
            }
            for i in range(POOLS):
                values = ["bench", f"pool{i}"]
                for key, (name, help_text) in GAUGES.items():
                    mode = "gauge_livemax" if "ratio" in key or "oldest" in key else "gauge_livesum"
                    files[mode].write_value(
                        mmap_key(name, name, labels, values, help_text),
                        float(pool["gauges"].get(key) or 0),
                        0.0,
                    )
                for state in ("checked_out", "idle"):
                    files["gauge_livesum"].write_value(
                        mmap_key(
                            "sqlalchemy_pool_connections",
                            "sqlalchemy_pool_connections",
                            [*labels, "state"],
                            [*values, state],
                            "c",
                        ),
                        1.0,
                        0.0,
                    )
                for name, help_text in COUNTERS.values():
                    files["counter"].write_value(
                        mmap_key(name, name + "_total", labels, values, help_text), 3.0, 0.0
                    )
                for key, (name, help_text) in HISTOGRAMS.items():
                    h = pool["histograms"][key]
                    previous = 0
                    for bound, count in zip([*h["buckets"], "+Inf"], h["counts"], strict=True):
                        files["histogram"].write_value(
                            mmap_key(
                                name,
                                name + "_bucket",
                                [*labels, "le"],
                                [*values, str(bound)],
                                help_text,
                            ),
                            float(count - previous),
                            0.0,
                        )
                        previous = count
                    files["histogram"].write_value(
                        mmap_key(name, name + "_sum", labels, values, help_text), h["sum"], 0.0
                    )
            for f in files.values():
                f.close()
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=path)
        ms = timed(lambda: generate_latest(registry), 3)
        return ms, len(os.listdir(path))


def latency_phase(mode: str, requests: int) -> None:
    """Child process: per-request latency with the sidecar in ``mode``; prints JSON."""
    from sqlalchemy import create_engine, text

    import sqlalchemy_pool_exporter

    url = None
    if mode != "off":
        server = socket.socket()
        server.bind(("127.0.0.1", 0))
        if mode == "hung":
            server.listen(1024)  # accepts connections, never answers
        port = server.getsockname()[1]
        if mode == "down":
            server.close()  # nothing listens: connection refused
        url = f"http://127.0.0.1:{port}/v1/push"
    with tempfile.TemporaryDirectory() as tmp:
        engine = create_engine(f"sqlite:///{tmp}/l.db")
        sqlalchemy_pool_exporter.instrument(engine, registry=None, push_url=url, push_interval=0.05)
        times = []
        for _ in range(requests):
            start = time.perf_counter()
            with engine.connect() as conn:
                conn.execute(text("select 1"))
            times.append(time.perf_counter() - start)
        times.sort()
    print(
        json.dumps(
            {
                "median_us": statistics.median(times) * 1e6,
                "p99_us": times[int(len(times) * 0.99)] * 1e6,
            }
        )
    )


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="ingest run length")
    parser.add_argument("--processes", type=int, default=1000, help="processes for render")
    parser.add_argument("--requests", type=int, default=20000, help="requests per latency run")
    parser.add_argument("--rounds", type=int, default=3, help="latency runs per mode")
    parser.add_argument("--latency-phase", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.latency_phase:
        latency_phase(args.latency_phase, args.requests)
        return
    pool = sample_pool()
    print(f"push body: {len(body_template('x', pool, 1, 5.0))} bytes ({POOLS} pools)")

    proc, metrics_url, push_url = start_sidecar("--max-processes", "5000")
    try:
        load(push_url, pool, args.processes)
        render_http = timed(lambda: urllib.request.urlopen(metrics_url + "/metrics").read(), 20)
        size = len(urllib.request.urlopen(metrics_url + "/metrics").read())
        rss = rss_mb(proc.pid)
        rate, errors = ingest(push_url, pool, args.seconds)
        rss_after = rss_mb(proc.pid)
    finally:
        proc.terminate()
        proc.wait(10)

    from prometheus_client import generate_latest

    from sqlalchemy_pool_exporter.sidecar.server import Sidecar
    from sqlalchemy_pool_exporter.sidecar.settings import SidecarSettings

    inproc = Sidecar(SidecarSettings())
    for k in range(args.processes):
        status, _ = inproc.ingest(body_template(f"p{k}", pool, k, 3600.0) % 1)
        assert status == 200
    render_inproc = timed(lambda: generate_latest(inproc.registry), 20)
    mp_ms, files = multiprocess_render(pool, args.processes)

    print(
        f"\n1. push ingest, 64 concurrent pushers x {POOLS} pools, real HTTP, {args.seconds:g} s:"
        f"\n   {rate:,.0f} pushes/s accepted ({errors} errors)   target >= 2,000"
    )
    print(
        f"\n2. /metrics render, {args.processes:,} processes x {POOLS} pools:"
        f"\n   sidecar over HTTP      {render_http:8.2f} ms  ({size:,} bytes)"
        f"\n   sidecar collector only {render_inproc:8.2f} ms"
        f"\n   prometheus_client multiprocess ({files:,} files) {mp_ms:8.1f} ms"
        f"\n   speed-up {mp_ms / render_http:,.0f}x over HTTP   target <= 50 ms and >= 10x"
    )
    print(
        f"\n3. sidecar RSS with {args.processes:,} processes x {POOLS} pools: {rss:.1f} MB"
        f" (after the ingest run, {args.processes + 64:,} processes: {rss_after:.1f} MB)"
        "   target <= 150 MB"
    )
    print(
        "\n4. instrumented request latency (SQLite connect+SELECT 1), pushing every 50 ms,"
        f"\n   median of {args.rounds} interleaved runs of {args.requests:,} requests each:"
    )
    modes = (
        ("off", "no push (embedded)"),
        ("down", "sidecar absent (refused)"),
        ("hung", "sidecar hung (never answers)"),
    )
    results: dict[str, list[dict[str, float]]] = {mode: [] for mode, _ in modes}
    for _ in range(args.rounds):
        for mode, _label in modes:
            out = subprocess.run(
                [
                    sys.executable,
                    __file__,
                    "--latency-phase",
                    mode,
                    "--requests",
                    str(args.requests),
                ],
                capture_output=True,
                text=True,
                check=True,
                cwd=ROOT,
            )
            results[mode].append(json.loads(out.stdout.strip().splitlines()[-1]))
    for mode, label in modes:
        median = statistics.median(r["median_us"] for r in results[mode])
        p99 = statistics.median(r["p99_us"] for r in results[mode])
        print(f"   {label:30s} median {median:7.1f} us   p99 {p99:7.1f} us")


if __name__ == "__main__":
    main()
