"""FastAPI and Starlette: a lifespan that instruments engines in the serving process.

::

    app = FastAPI(lifespan=pool_metrics_lifespan(engine))
    app = FastAPI(lifespan=pool_metrics_lifespan(engine, other, lifespan=your_lifespan))

At startup — in the process that serves, after any fork — it instruments each engine
(sync ``Engine`` or ``AsyncEngine``) with the given ``instrument()`` options, then runs
``your_lifespan`` inside, passing its state through. It works the same under
``uvicorn --workers N`` (each worker is a fresh interpreter that imports the app and
runs its own lifespan), ``fastapi run``, hypercorn, and gunicorn's uvicorn worker: if
the app module was imported by a preloading master, each worker first gets fresh pools
(``dispose(close=False)``) so it never shares the master's connections.

An engine your own lifespan creates is instrumented with one line there:
``instrument(engine)``. Nothing happens at shutdown: your lifespan disposes the engines
it owns.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

from sqlalchemy_pool_exporter.instrumentation.engines import check_options, instrument, sync_engine

Lifespan = Callable[[Any], AbstractAsyncContextManager[Any]]


def pool_metrics_lifespan(
    *engines: Any, lifespan: Lifespan | None = None, **options: Any
) -> Lifespan:
    """A lifespan that instruments ``engines`` at startup, around ``lifespan`` if given."""
    check_options(**options)  # a wrong argument fails at import, not at the first startup
    for engine in engines:
        sync_engine(engine)
    imported_in = os.getpid()

    @asynccontextmanager
    async def run(app: Any) -> AsyncIterator[Any]:
        forked = os.getpid() != imported_in
        for engine in engines:
            if forked:  # imported by a preloading parent: leave its connections to it
                sync_engine(engine).dispose(close=False)
            instrument(engine, **options)
        if lifespan is None:
            yield None
        else:
            async with lifespan(app) as state:
                yield state

    return run
