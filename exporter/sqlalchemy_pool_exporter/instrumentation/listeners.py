"""Pool event listeners: connection churn, counted from SQLAlchemy's pool events.

Registered on the *engine*, so they survive ``engine.dispose()`` (the new pool inherits
the engine's dispatch): invalidate and soft_invalidate count invalidations, by kind and
cause (:func:`invalidation_cause`); close and
close_detached count DBAPI connections the pool closed. None of them fires per checkout.
:class:`Wiring` attaches these together with the acquire-path wrappers of
:mod:`sqlalchemy_pool_exporter.instrumentation.acquire`, and takes both away again.
"""

from __future__ import annotations

import sys
import weakref
from collections.abc import Callable
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DisconnectionError

from sqlalchemy_pool_exporter.instrumentation import compat
from sqlalchemy_pool_exporter.instrumentation.acquire import unwrap_pool, wrap_pool
from sqlalchemy_pool_exporter.instrumentation.stats import PoolStats
from sqlalchemy_pool_exporter.logs import RateLimitedReporter

#: Frames looked at above an invalidate event (the deciding ones are a few levels up).
_MAX_FRAMES = 64


def invalidation_cause(exc: BaseException | None) -> str:
    """Why a connection is being invalidated, from the event's exception and the stack.

    ``pre_ping``: found dead at checkout (a :class:`DisconnectionError` inside
    ``_ConnectionFairy._checkout``) and replaced, the app saw nothing; ``error``: a
    disconnect error on its way to the app; ``explicit``: the app called
    ``invalidate()``; ``other``: anything else (a failed reset at checkin, a checkout
    that ran out of reconnection attempts).
    """
    codes = compat.INVALIDATION_CODES
    seen: set[str] = set()
    frame = sys._getframe(1)
    for _ in range(_MAX_FRAMES):
        if frame is None:
            break
        cause = codes.get(frame.f_code)
        if cause is not None:
            seen.add(cause)
        frame = frame.f_back  # type: ignore[assignment]
    if "pre_ping" in seen:
        # Inside the checkout: only a DisconnectionError is the replaced-dead case.
        return "pre_ping" if isinstance(exc, DisconnectionError) else "other"
    if "error" in seen:
        return "error"
    if "explicit" in seen or exc is None:
        return "explicit"
    return "other"


def _listeners(stats: PoolStats, reporter: RateLimitedReporter) -> dict[str, Callable[..., None]]:
    lock = stats.lock

    def guarded(where: str, fn: Callable[..., None]) -> Callable[..., None]:
        def listener(*args: Any) -> None:
            try:
                fn(*args)
            except Exception as exc:
                reporter.report(where, exc)

        return listener

    def on_invalidate(dbapi_connection: Any, rec: Any, exc: Any) -> None:
        field = f"invalidations_hard_{invalidation_cause(exc)}"
        with lock:
            setattr(stats, field, getattr(stats, field) + 1)

    def on_soft_invalidate(dbapi_connection: Any, rec: Any, exc: Any) -> None:
        field = f"invalidations_soft_{invalidation_cause(exc)}"
        with lock:
            setattr(stats, field, getattr(stats, field) + 1)

    def on_close(dbapi_connection: Any, rec: Any) -> None:
        with lock:
            stats.connections_closed += 1

    def on_close_detached(dbapi_connection: Any) -> None:
        with lock:
            stats.connections_closed += 1

    return {
        "invalidate": guarded("invalidate", on_invalidate),
        "soft_invalidate": guarded("soft_invalidate", on_soft_invalidate),
        "close": guarded("close", on_close),
        "close_detached": guarded("close_detached", on_close_detached),
    }


class Wiring:
    """The listeners and wrappers attaching one :class:`PoolStats` to one engine."""

    def __init__(self, engine: Engine, stats: PoolStats, reporter: RateLimitedReporter) -> None:
        # Weak: the registry keeps the wiring, and must not keep a dropped engine alive.
        self._engine = weakref.ref(engine)
        self.stats = stats
        self.reporter = reporter
        self._pool_listeners = _listeners(stats, reporter)

    def attach(self) -> None:
        """Register the listeners on the engine and wrap its current pool."""
        engine = self._engine()
        if engine is None:
            return
        for name, fn in self._pool_listeners.items():
            event.listen(engine, name, fn)
        wrap_pool(engine.pool, self.stats, self.reporter)

    def detach(self) -> None:
        """Remove every listener and wrapper; in-flight checkouts simply stop counting."""
        engine = self._engine()
        if engine is None:
            return
        for name, fn in self._pool_listeners.items():
            if event.contains(engine, name, fn):
                event.remove(engine, name, fn)
        unwrap_pool(engine.pool)
