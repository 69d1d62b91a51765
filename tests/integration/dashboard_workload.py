"""A loaded, leaking app process for the dashboard's end-to-end test.

Run as ``python -m tests.integration.dashboard_workload --url URL --bad-url URL``; it is
configured like any instrumented app, through ``POOL_EXPORTER_*`` variables (push URL,
push interval, app name, leak threshold). It runs until SIGTERM (then exits normally, so
the final push retires it at once) or SIGKILL (then the sidecar expires it).

Everything a panel of the dashboard shows happens here, on purpose and often:

* pool ``orders`` (pool_size 2, max_overflow 1, pool_timeout 0.25 s) serves four request
  threads. The load alternates every two seconds between a burst — more callers than
  connections: waiters, overflow, checkout timeouts — and a calm phase with idle
  connections;
* a leaker checks out a connection, starts a transaction (the server sees the session
  idle in transaction) and holds it past the leak threshold; every other time it closes
  it, otherwise it drops the last reference and the garbage collector reclaims it;
* an invalidator invalidates one connection hard and one soft per cycle, so new
  connections are created and old ones closed;
* pool ``reports`` points at a database that does not exist: its connects fail;
* a deadlocker (an engine of its own, not instrumented: no pool of its own on the
  dashboard) makes two sessions take advisory locks in opposite orders: both wait for a
  lock until the server detects the deadlock and cancels one.

With ``--port-file`` the process also serves its metrics itself (embedded mode, no
``app`` label) on a free port of 127.0.0.1 and writes the port to that file.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import random
import signal
import sys
import threading
import time
from pathlib import Path
from types import FrameType
from typing import Any

from sqlalchemy import Engine, create_engine, exc, text

import sqlalchemy_pool_exporter

BURST_SECONDS = 2.0
LEAK_HOLD_SECONDS = 2.5


def bursting() -> bool:
    """True in the busy half of each cycle (all processes in step: they share the clock)."""
    return int(time.time() / BURST_SECONDS) % 2 == 0


def request(engine: Engine, index: int, stop: threading.Event) -> None:
    """One request thread: short transactions, back to back in a burst, rare when calm."""
    while not stop.is_set():
        if not bursting() and index > 0:
            time.sleep(0.1)
            continue
        try:
            with engine.connect() as conn:
                conn.execute(text("SELECT pg_sleep(:s)"), {"s": random.uniform(0.05, 0.2)})
        except exc.TimeoutError:
            pass  # "QueuePool limit ... reached": what the dashboard must show
        if not bursting():
            time.sleep(0.3)


def leaker(engine: Engine, stop: threading.Event) -> None:
    """Hold a connection idle in transaction past the leak threshold, then let it go."""
    drop = False
    while not stop.is_set():
        try:
            conn: Any = engine.connect()
        except exc.TimeoutError:
            continue
        conn.execute(text("SELECT 1"))  # begins the transaction, then sits idle in it
        stop.wait(LEAK_HOLD_SECONDS)
        if drop:
            del conn  # never returned: the garbage collector reclaims the connection
            gc.collect()
        else:
            conn.close()
        drop = not drop
        stop.wait(0.5)


def invalidator(engine: Engine, stop: threading.Event) -> None:
    """Invalidate connections, alternately hard (closed) and soft (replaced later)."""
    soft = False
    while not stop.wait(1.0):
        try:
            with engine.connect() as conn:
                conn.execute(text("SELECT 1"))
                if soft:
                    conn.connection.invalidate(soft=True)
                else:
                    conn.invalidate()
            soft = not soft
        except exc.TimeoutError:
            pass


def _lock(conn: Any, key: int) -> None:
    # One of the two is the victim the server cancels to break the deadlock.
    with contextlib.suppress(exc.DBAPIError):
        conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": key})


def deadlocker(url: str, stop: threading.Event) -> None:
    """Two sessions lock 1 then 2 and 2 then 1: lock waits, then a deadlock, per cycle."""
    engine = create_engine(
        url, pool_size=2, max_overflow=0, connect_args={"application_name": "dashboard-locks"}
    )
    while not stop.wait(1.0):
        a, b = engine.connect(), engine.connect()
        try:
            a.execute(text("SELECT pg_advisory_xact_lock(1)"))
            b.execute(text("SELECT pg_advisory_xact_lock(2)"))
            other = threading.Thread(target=_lock, args=(a, 2))
            other.start()
            _lock(b, 1)
            other.join()
        finally:
            for conn in (a, b):
                conn.rollback()
                conn.close()
    engine.dispose()


def failing_connects(engine: Engine, stop: threading.Event) -> None:
    """Keep trying a database that does not exist."""
    while not stop.wait(0.5):
        try:
            with engine.connect():
                pass
        except exc.OperationalError:
            pass
        except exc.TimeoutError:
            pass


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True, help="SQLAlchemy URL of a PostgreSQL database")
    parser.add_argument("--bad-url", required=True, help="URL whose connects fail")
    parser.add_argument("--port-file", type=Path, help="serve /metrics, write the port here")
    args = parser.parse_args(argv)

    # SIGTERM ends the process normally, so atexit sends the final push.
    def terminate(signum: int, frame: FrameType | None) -> None:
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, terminate)
    orders = create_engine(
        args.url,
        pool_size=2,
        max_overflow=1,
        pool_timeout=0.25,
        connect_args={"application_name": "dashboard-workload"},
    )
    reports = create_engine(args.bad_url, pool_size=1, max_overflow=0, pool_timeout=0.25)
    sqlalchemy_pool_exporter.instrument(orders, name="orders")
    sqlalchemy_pool_exporter.instrument(reports, name="reports")
    if args.port_file is not None:
        server, _ = sqlalchemy_pool_exporter.start_http_server(0, addr="127.0.0.1")
        partial = args.port_file.with_suffix(".partial")  # rename: never read half-written
        partial.write_text(str(server.server_address[1]))
        partial.rename(args.port_file)

    stop = threading.Event()
    jobs: list[tuple[Any, ...]] = [(request, orders, i, stop) for i in range(4)]
    jobs += [(leaker, orders, stop), (invalidator, orders, stop), (failing_connects, reports, stop)]
    jobs += [(deadlocker, args.url, stop)]
    for func, *func_args in jobs:
        threading.Thread(target=func, args=func_args, daemon=True).start()
    print("workload running", flush=True)
    try:
        while True:
            time.sleep(1)
    finally:
        stop.set()


if __name__ == "__main__":
    sys.exit(main())
