"""A small WSGI app for the gunicorn acceptance tests: healthy and leaky endpoints.

Loaded with ``preload_app``: the engine is created and instrumented once in the master,
which makes no checkout (so every counted checkout is a request's), and every forked
worker gets its own identity, fresh stats and its own push thread. Push mode comes from
``POOL_EXPORTER_PUSH_URL`` / ``POOL_EXPORTER_PUSH_INTERVAL`` / ``POOL_EXPORTER_APP``; the
database file from ``GUNICORN_APP_DB``.

* ``/healthy`` — one checkout, returned at once.
* ``/leaky`` — one checkout that is never returned (kept in a module list, like a session
  the code forgot to close).
* ``/pid`` — the worker's pid, no checkout.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from typing import Any

from sqlalchemy import create_engine, text

import sqlalchemy_pool_exporter

engine = create_engine(
    f"sqlite:///{os.environ['GUNICORN_APP_DB']}", pool_size=20, max_overflow=5, pool_timeout=5
)
sqlalchemy_pool_exporter.instrument(engine, name="main", registry=None)
_leaked: list[Any] = []


def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    """Route by path."""
    path = environ.get("PATH_INFO", "")
    if path == "/healthy":
        with engine.connect() as conn:
            body = str(conn.execute(text("select 1")).scalar()).encode()
    elif path == "/leaky":
        conn = engine.connect()
        conn.execute(text("select 1"))
        _leaked.append(conn)
        body = str(len(_leaked)).encode()
    elif path == "/pid":
        body = str(os.getpid()).encode()
    else:
        start_response("404 Not Found", [("Content-Type", "text/plain")])
        return [b"not found"]
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
