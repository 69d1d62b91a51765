"""Example app of the compose stack: a tiny WSGI shop on PostgreSQL, instrumented in one line.

gunicorn imports this module once in each of its worker processes, so every worker has
its own engine, its own pool and its own push thread; the sidecar adds them up. The
routes make the pool do what real apps make it do:

- ``/``        a quick query: check out, query, check in;
- ``/report``  a slow query (0.5-2 s) that holds its connection while PostgreSQL works,
               so bursts of them fill the pool and make other requests wait;
- ``/leak``    the classic bug: a connection checked out and never returned. A janitor
               closes it after ``LEAK_HOLD_SECONDS`` (standing in for request teardown
               or the garbage collector), long enough to be reported as a leak.
- ``/healthz`` liveness, without touching the database.

A request that cannot get a connection within ``pool_timeout`` answers 503.
"""

from __future__ import annotations

import os
import random
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from sqlalchemy import Connection, create_engine, exc, text

import sqlalchemy_pool_exporter

LEAK_HOLD_SECONDS = 30.0

engine = create_engine(
    os.environ["DATABASE_URL"],
    pool_size=5,
    max_overflow=5,
    pool_timeout=5,
    pool_pre_ping=True,
)
# Push mode: POOL_EXPORTER_PUSH_URL, _TOKEN and _APP come from the environment.
sqlalchemy_pool_exporter.instrument(engine, name="shop")

_leaked: list[tuple[float, Connection]] = []
_leaked_lock = threading.Lock()


def orders() -> str:
    """A quick, well-behaved request."""
    with engine.connect() as conn:
        count = conn.execute(
            text("SELECT count(*) FROM orders WHERE customer = :customer"),
            {"customer": f"customer-{random.randrange(100)}"},
        ).scalar_one()
    return f"{count} orders\n"


def report() -> str:
    """A slow request: the connection stays checked out while the server works."""
    seconds = random.uniform(0.5, 2.0)
    with engine.connect() as conn:
        conn.execute(text("SELECT pg_sleep(:s)"), {"s": seconds})
        total = conn.execute(text("SELECT coalesce(sum(total_cents), 0) FROM orders")).scalar_one()
    return f"revenue {total / 100:.2f} (took {seconds:.1f} s)\n"


def leak() -> str:
    """A request that forgets to close its connection."""
    conn = engine.connect()
    conn.execute(text("SELECT 1"))
    with _leaked_lock:
        _leaked.append((time.monotonic(), conn))
    return "leaked one connection\n"


def healthz() -> str:
    """The process is up."""
    return "ok\n"


def _janitor() -> None:
    while True:
        time.sleep(1.0)
        now = time.monotonic()
        with _leaked_lock:
            due = [c for t, c in _leaked if now - t >= LEAK_HOLD_SECONDS]
            _leaked[:] = [(t, c) for t, c in _leaked if now - t < LEAK_HOLD_SECONDS]
        for conn in due:
            conn.close()


threading.Thread(target=_janitor, name="leak-janitor", daemon=True).start()

ROUTES: dict[str, Callable[[], str]] = {
    "/": orders,
    "/report": report,
    "/leak": leak,
    "/healthz": healthz,
}


def application(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    """The WSGI entry point (``shop:application``)."""
    handler = ROUTES.get(environ.get("PATH_INFO") or "/")
    if handler is None:
        status, body = "404 Not Found", "not found\n"
    else:
        try:
            status, body = "200 OK", handler()
        except exc.TimeoutError:
            status, body = "503 Service Unavailable", "connection pool exhausted\n"
    data = body.encode()
    start_response(status, [("Content-Type", "text/plain"), ("Content-Length", str(len(data)))])
    return [data]
