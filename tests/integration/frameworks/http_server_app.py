"""A WSGI app that serves its metrics as the README's embedded mode suggests.

Every gunicorn worker (no ``--preload``) imports it and calls ``start_http_server`` on
the same port, ``HTTP_SERVER_APP_PORT``: one gets it, the others must carry on.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from typing import Any

from sqlalchemy import create_engine, text

import sqlalchemy_pool_exporter

engine = create_engine(f"sqlite:///{os.environ['HTTP_SERVER_APP_DB']}")
sqlalchemy_pool_exporter.instrument(engine, name="main")
served = sqlalchemy_pool_exporter.start_http_server(
    int(os.environ["HTTP_SERVER_APP_PORT"]), addr="127.0.0.1"
)


def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    """One checkout; the answer says whether this worker serves the metrics port."""
    with engine.connect() as conn:
        conn.execute(text("SELECT 1"))
    body = f"{os.getpid()} {'serving' if served else 'not-serving'}".encode()
    start_response("200 OK", [("Content-Length", str(len(body)))])
    return [body]
