"""``sqlalchemy-pool-exporter demo``: watch a pool run dry, live, on SQLite.

An instrumented engine on a throwaway SQLite file serves a small web-like workload from
worker threads. Most requests are healthy (``with Session(engine) as s: ...``); some hit
the classic bug of a session that is opened and never closed, so its connection stays
checked out until a janitor — standing in for request teardown or the garbage
collector — lets go of it 20 s later. Leaks pile up, the pool exhausts, healthy requests
wait and time out; the metrics on ``/metrics`` and the leak warnings in the log show
every step. It stops after ``--duration`` seconds or on Ctrl-C.
"""

from __future__ import annotations

import argparse
import gc
import logging
import random
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, exc, text
from sqlalchemy.orm import Session

import exporter

LEAK_HOLD_SECONDS = 20.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of ``demo``."""
    parser.add_argument("--duration", type=float, default=60.0, help="seconds to run (0 = forever)")
    parser.add_argument("--port", type=int, default=9187, help="port of /metrics (0 = any free)")
    parser.add_argument("--host", default="127.0.0.1", help="address of /metrics")
    parser.add_argument("--threads", type=int, default=8, help="worker threads")
    parser.add_argument(
        "--leak-rate",
        type=float,
        default=0.05,
        help="fraction of requests that forget to close their session",
    )
    parser.add_argument(
        "--leak-threshold",
        type=float,
        default=5.0,
        help="seconds a checkout may last before it is reported as a leak",
    )
    parser.add_argument(
        "--database", default=None, help="SQLAlchemy URL (default: a throwaway SQLite file)"
    )


def healthy_request(engine: Any) -> None:
    """A request that closes its session: the connection goes back at once."""
    with Session(engine) as session:
        session.execute(text("SELECT count(*) FROM orders")).scalar()
        time.sleep(random.uniform(0.005, 0.03))


def leaky_request(engine: Any, leaked: list[tuple[float, Session]]) -> None:
    """A request that forgets ``session.close()``: its connection stays checked out."""
    session = Session(engine)
    session.execute(text("SELECT count(*) FROM orders")).scalar()
    leaked.append((time.monotonic(), session))  # the app "keeps" it somewhere


def run(args: argparse.Namespace) -> int:
    """Run the demo until the duration passes or Ctrl-C."""
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    if args.threads < 1 or not 0 <= args.leak_rate <= 1 or args.duration < 0:
        raise SystemExit("demo: --threads must be >= 1, --leak-rate in 0..1, --duration >= 0")
    tmp = tempfile.TemporaryDirectory(prefix="pool-exporter-demo-")
    url = args.database or f"sqlite:///{Path(tmp.name) / 'shop.db'}"
    engine = create_engine(url, pool_size=5, max_overflow=5, pool_timeout=2.0)
    exporter.instrument(engine, name="shop", leak_threshold=args.leak_threshold)
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE IF NOT EXISTS orders (id INTEGER PRIMARY KEY)"))
        conn.execute(text("INSERT INTO orders DEFAULT VALUES"))
    server, _ = exporter.start_http_server(args.port, addr=args.host)
    port = server.server_address[1]
    print(
        f"demo: pool metrics at http://{args.host}:{port}/metrics "
        f"(try: curl -s http://{args.host}:{port}/metrics | grep sqlalchemy_pool_)",
        flush=True,
    )

    stop = threading.Event()
    leaked: list[tuple[float, Session]] = []
    lock = threading.Lock()
    outcome = {"ok": 0, "timeout": 0}

    def worker() -> None:
        while not stop.is_set():
            try:
                if random.random() < args.leak_rate:
                    with lock:
                        leaky_request(engine, leaked)
                else:
                    healthy_request(engine)
                outcome["ok"] += 1
            except exc.TimeoutError:
                outcome["timeout"] += 1
            time.sleep(random.uniform(0.01, 0.05))

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(args.threads)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + args.duration if args.duration else float("inf")
    stats = exporter.instrumentations()[0].stats
    try:
        while time.monotonic() < deadline:
            time.sleep(min(2.0, max(0.0, deadline - time.monotonic())))
            with lock:  # the janitor: drop sessions leaked long enough ago
                now = time.monotonic()
                keep = [(t0, s) for t0, s in leaked if now - t0 < LEAK_HOLD_SECONDS]
                del leaked[:]
                leaked.extend(keep)
            gc.collect()
            r = stats.read(top=0)
            print(
                f"demo: checked_out={r.checked_out} pending={r.pending} "
                f"checkouts={r.counters['checkouts']} timeouts={r.counters['checkout_timeouts']} "
                f"leaked={r.leaked} gc_reclaimed={r.counters['gc_reclaimed']} "
                f"requests_ok={outcome['ok']} requests_timed_out={outcome['timeout']}",
                flush=True,
            )
    except KeyboardInterrupt:
        pass
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=5)
        server.shutdown()
        leaked.clear()
        engine.dispose()
        tmp.cleanup()
    print("demo: done", flush=True)
    return 0
