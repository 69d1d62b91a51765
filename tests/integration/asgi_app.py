"""A bare ASGI app for the process-exit tests: one checkout per request, no framework.

The engine is created and instrumented at import, as most apps do, so under uvicorn
``--workers`` it happens inside each worker after uvicorn has installed its signal
handlers, and under gunicorn's UvicornWorker before. Push mode comes from the
``POOL_EXPORTER_*`` environment; the database file from ``ASGI_APP_DB``.

* ``/healthy`` — one checkout, returned at once; the body is the worker's pid.
* the lifespan protocol is answered, so uvicorn runs its full startup and shutdown.
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable
from typing import Any

from sqlalchemy import create_engine, text

import sqlalchemy_pool_exporter

engine = create_engine(f"sqlite:///{os.environ['ASGI_APP_DB']}", pool_size=5, max_overflow=5)
sqlalchemy_pool_exporter.instrument(engine, name="main", registry=None)

Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


async def app(scope: dict[str, Any], receive: Receive, send: Send) -> None:
    """Answer lifespan events and ``GET /healthy``."""
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["path"] != "/healthy":
        await send({"type": "http.response.start", "status": 404, "headers": []})
        await send({"type": "http.response.body", "body": b"not found"})
        return
    with engine.connect() as conn:
        conn.execute(text("select 1"))
    body = str(os.getpid()).encode()
    headers = [(b"content-type", b"text/plain"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})
