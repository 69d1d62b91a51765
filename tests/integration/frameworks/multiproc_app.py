"""A preloaded WSGI app with prometheus_client multiprocess mode and its own ``/metrics``.

As such apps are written: ``PROMETHEUS_MULTIPROC_DIR`` set, ``/metrics`` built from a
fresh registry with a ``MultiProcessCollector``. The engine (PostgreSQL from
``MULTIPROC_APP_DB``) is used once at import — the master then holds a pooled
connection when gunicorn forks — and instrumented. ``/backend`` makes one checkout and
answers with the worker's pid, the PostgreSQL backend that served it and the master's.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, generate_latest, multiprocess
from sqlalchemy import create_engine, text

import sqlalchemy_pool_exporter

engine = create_engine(os.environ["MULTIPROC_APP_DB"], pool_size=2, max_overflow=0)
with engine.connect() as conn:
    MASTER_BACKEND = conn.execute(text("SELECT pg_backend_pid()")).scalar_one()
sqlalchemy_pool_exporter.instrument(engine, name="main")
REQUESTS = Counter("app_requests", "Requests served by the app.")


def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    """``/backend`` (one checkout) and ``/metrics`` (multiprocess mode)."""
    REQUESTS.inc()
    if environ.get("PATH_INFO") == "/metrics":
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        body = generate_latest(registry)
    else:
        with engine.connect() as c:
            backend = c.execute(text("SELECT pg_backend_pid()")).scalar_one()
        doc = {"pid": os.getpid(), "backend": backend, "master_backend": MASTER_BACKEND}
        body = json.dumps(doc).encode()
    start_response("200 OK", [("Content-Length", str(len(body)))])
    return [body]
