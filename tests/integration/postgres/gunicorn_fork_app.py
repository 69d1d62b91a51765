"""A WSGI app whose preloading master queries PostgreSQL before gunicorn forks its workers.

The module-level query leaves one open connection idle in the master's pool: without
``engine.dispose(close=False)`` in ``post_fork`` (:mod:`.gunicorn_fork_conf`) every
worker inherits it. Configuration: ``FORK_APP_DB_URL``, plus the ``POOL_EXPORTER_*``
push settings.

* ``/query`` — one checkout, one query; answers ``<worker pid> <backend pid>``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from typing import Any

from sqlalchemy import create_engine, text

import sqlalchemy_pool_exporter

engine = create_engine(os.environ["FORK_APP_DB_URL"], pool_size=5, max_overflow=10)
sqlalchemy_pool_exporter.instrument(engine, name="main", registry=None)
with engine.connect() as conn:  # the master touches the database while loading the app
    conn.execute(text("select 1"))


def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    """``/query`` only."""
    if environ.get("PATH_INFO") != "/query":
        start_response("404 Not Found", [("Content-Type", "text/plain")])
        return [b"not found"]
    with engine.connect() as conn:
        backend = conn.execute(text("select pg_backend_pid()")).scalar()
    body = f"{os.getpid()} {backend}".encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
