"""FastAPI on asyncpg, instrumented by the lifespan helper (``uvicorn fastapi_app:app``).

The database URL comes from ``FASTAPI_APP_DB``. ``/query`` makes exactly one checkout;
``/pid`` makes none and names the worker that answered.
"""

from __future__ import annotations

import os

from fastapi import FastAPI
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from sqlalchemy_pool_exporter.integrations.starlette import pool_metrics_lifespan

engine = create_async_engine(os.environ["FASTAPI_APP_DB"], pool_size=3, max_overflow=2)
app = FastAPI(lifespan=pool_metrics_lifespan(engine, name="main"))


@app.get("/query")
async def query() -> dict[str, int]:
    """One checkout: the worker's pid and the database's answer."""
    async with engine.connect() as conn:
        value = (await conn.execute(text("SELECT 1"))).scalar_one()
    return {"pid": os.getpid(), "value": value}


@app.get("/pid")
async def pid() -> dict[str, int]:
    """No checkout: which worker answered."""
    return {"pid": os.getpid()}
