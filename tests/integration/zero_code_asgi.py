"""An ASGI app on an asyncio engine that never imports sqlalchemy_pool_exporter (uvicorn).

uvicorn ``--workers`` starts each worker with multiprocessing ``spawn``: a fresh
interpreter that imports this module and creates its engine. ``/query`` makes exactly
one checkout. Database: ``ZERO_CODE_DB``.
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

engine = create_async_engine(f"sqlite+aiosqlite:///{os.environ['ZERO_CODE_DB']}", pool_size=5)


async def app(
    scope: dict[str, Any],
    receive: Callable[[], Awaitable[dict[str, Any]]],
    send: Callable[[dict[str, Any]], Awaitable[None]],
) -> None:
    """``/query``: one checkout."""
    if scope["type"] != "http":
        return  # no lifespan support: uvicorn carries on without it
    async with engine.connect() as conn:
        body = str((await conn.execute(text("select 1"))).scalar()).encode()
    headers = [(b"content-type", b"text/plain"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})
