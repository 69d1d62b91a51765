"""A WSGI app that never imports sqlalchemy_pool_exporter (``run -- gunicorn``).

Each worker creates its engine when it imports this module (no ``--preload``: the
master never does); ``/query`` makes exactly one checkout. Database: ``ZERO_CODE_DB``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from typing import Any

from sqlalchemy import create_engine, text

engine = create_engine(f"sqlite:///{os.environ['ZERO_CODE_DB']}", pool_size=5)


def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    """``/query``: one checkout."""
    with engine.connect() as conn:
        body = str(conn.execute(text("select 1")).scalar()).encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
