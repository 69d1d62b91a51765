"""Event wiring: the hot path from SQLAlchemy's pool to :class:`~exporter.stats.PoolStats`.

Two kinds of hook feed the stats:

* **Pool event listeners**, registered on the *engine* so that they survive
  ``engine.dispose()`` (the new pool inherits the engine's dispatch): checkin and
  detach end a checkout; invalidate, soft_invalidate, close and close_detached count
  connection churn.
* **Acquire-path wrappers** on the current pool object. No event fires before a
  checkout waits, and a ``QueuePool limit ... reached`` ``TimeoutError`` fires none at
  all, so ``pool.connect`` is wrapped to count pending callers, wait time, timeouts and
  successful checkouts; ``pool._invoke_creator`` is wrapped to time new DBAPI
  connections and count failed attempts. The engine's ``engine_disposed`` event
  re-wraps the replacement pool.

Every wrapper re-raises the app's exception untouched, and every piece of bookkeeping is
guarded: an error in the exporter is reported (rate-limited) and never reaches the app.
"""

from __future__ import annotations

import sys
import weakref
from bisect import bisect_left
from collections.abc import Callable
from time import perf_counter
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from sqlalchemy.pool import Pool

from exporter import sites
from exporter.logs import RateLimitedReporter
from exporter.stats import PoolStats

_MARK = "_pool_exporter_stats"
_getframe = sys._getframe

try:
    from threading import get_ident
except ImportError:  # pragma: no cover
    from _thread import get_ident


def _wrap_connect(pool: Pool, stats: PoolStats, reporter: RateLimitedReporter) -> None:
    # Hot path: everything the closure needs is a local; one lock section per checkout;
    # the pending count's increment is an atomic C call so it needs no lock at all.
    original = pool.connect
    acquire = stats.lock.acquire
    release = stats.lock.release
    held = stats.held
    started = stats.waits_started
    wait_bounds = stats.wait.bounds
    wait_counts = stats.wait.counts
    wait = stats.wait
    recent: list[int] = []  # checkout-site depths that worked lately (see sites.locate)
    locate = sites.locate

    def connect() -> Any:
        next(started)
        start = perf_counter()
        try:
            fairy = original()
        except PoolTimeoutError:
            elapsed = perf_counter() - start
            acquire()
            try:
                stats.waits_finished += 1
                stats.checkout_timeouts += 1
                wait_counts[bisect_left(wait_bounds, elapsed)] += 1
                wait.sum += elapsed
            finally:
                release()
            raise
        except BaseException:
            acquire()
            stats.waits_finished += 1
            release()
            raise
        now = perf_counter()
        try:
            # A re-entrant checkout (SingletonThreadPool) hands back a proxy that is
            # already checked out: not a new checkout.
            if fairy._counter == 1:
                rec = fairy._connection_record
                site = locate(recent) if stats.capture_sites else None
                entry = (now, site, get_ident(), rec.fairy_ref)
                elapsed = now - start
                acquire()
                try:
                    stats.waits_finished += 1
                    stats.checkouts += 1
                    wait_counts[bisect_left(wait_bounds, elapsed)] += 1
                    wait.sum += elapsed
                    held[rec] = entry
                    if len(held) > stats.peak:
                        stats.peak = len(held)
                finally:
                    release()
            else:
                acquire()
                stats.waits_finished += 1
                release()
        except Exception as exc:  # never let bookkeeping reach the app
            reporter.report("checkout", exc)
        return fairy

    setattr(connect, _MARK, stats)
    connect.__wrapped__ = original  # type: ignore[attr-defined]
    pool.connect = connect  # type: ignore[method-assign]


def _wrap_creator(pool: Pool, stats: PoolStats, reporter: RateLimitedReporter) -> None:
    original = pool._invoke_creator
    lock = stats.lock

    def invoke_creator(rec: Any) -> Any:
        start = perf_counter()
        try:
            connection = original(rec)
        except BaseException:
            with lock:
                stats.connect_errors += 1
            raise
        elapsed = perf_counter() - start
        with lock:
            stats.connections_created += 1
            stats.connect.observe(elapsed)
        return connection

    setattr(invoke_creator, _MARK, stats)
    invoke_creator.__wrapped__ = original  # type: ignore[attr-defined]
    pool._invoke_creator = invoke_creator


def wrap_pool(pool: Pool, stats: PoolStats, reporter: RateLimitedReporter) -> None:
    """Install the acquire-path wrappers on ``pool`` unless already there."""
    if getattr(pool.connect, _MARK, None) is not stats:
        _wrap_connect(pool, stats, reporter)
    if getattr(pool._invoke_creator, _MARK, None) is not stats:
        _wrap_creator(pool, stats, reporter)


def unwrap_pool(pool: Pool) -> None:
    """Remove the acquire-path wrappers from ``pool``, if present."""
    for attr in ("connect", "_invoke_creator"):
        fn = pool.__dict__.get(attr)
        if fn is not None and getattr(fn, _MARK, None) is not None:
            delattr(pool, attr)
            if attr == "_invoke_creator":
                # Restore the creator wrapper Pool.__init__ built.
                pool._invoke_creator = fn.__wrapped__


def _listeners(stats: PoolStats, reporter: RateLimitedReporter) -> dict[str, Callable[..., None]]:
    lock = stats.lock

    def guarded(where: str, fn: Callable[..., None]) -> Callable[..., None]:
        def listener(*args: Any) -> None:
            try:
                fn(*args)
            except Exception as exc:
                reporter.report(where, exc)

        return listener

    held = stats.held
    leaked = stats.leaked
    use_bounds = stats.use.bounds
    use_counts = stats.use.counts
    use = stats.use
    acquire = lock.acquire
    release = lock.release

    def on_checkin(dbapi_connection: Any, rec: Any) -> None:
        # Ends a checkout, also on detach. Hot path: registered bare, everything inline.
        try:
            entry = held.get(rec)
            if entry is None:
                return  # checked out before instrumenting, or a double checkin
            age = perf_counter() - entry[0]
            ref = entry[3]
            # The proxy is gone: the garbage collector is returning what the app forgot.
            reclaimed = ref is not None and ref() is None
            acquire()
            try:
                if held.pop(rec, None) is None:
                    return
                use_counts[bisect_left(use_bounds, age)] += 1
                use.sum += age
                if reclaimed:
                    stats.gc_reclaimed += 1
                was_leaked = rec in leaked
                if was_leaked:
                    leaked.discard(rec)
            finally:
                release()
            if was_leaked:
                stats.leak_returned(entry, age, reclaimed)
        except Exception as exc:
            reporter.report("checkin", exc)

    def on_invalidate(dbapi_connection: Any, rec: Any, exc: Any) -> None:
        with lock:
            stats.invalidations_hard += 1

    def on_soft_invalidate(dbapi_connection: Any, rec: Any, exc: Any) -> None:
        with lock:
            stats.invalidations_soft += 1

    def on_close(dbapi_connection: Any, rec: Any) -> None:
        with lock:
            stats.connections_closed += 1

    def on_close_detached(dbapi_connection: Any) -> None:
        with lock:
            stats.connections_closed += 1

    return {
        "checkin": on_checkin,
        "detach": on_checkin,
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

        def on_disposed(disposed: Engine) -> None:
            try:
                wrap_pool(disposed.pool, stats, reporter)
            except Exception as exc:
                reporter.report("engine_disposed", exc)

        self._on_disposed = on_disposed

    def attach(self) -> None:
        """Register the listeners on the engine and wrap its current pool."""
        engine = self._engine()
        if engine is None:
            return
        for name, fn in self._pool_listeners.items():
            event.listen(engine, name, fn)
        event.listen(engine, "engine_disposed", self._on_disposed)
        wrap_pool(engine.pool, self.stats, self.reporter)

    def detach(self) -> None:
        """Remove every listener and wrapper; in-flight checkouts simply stop counting."""
        engine = self._engine()
        if engine is None:
            return
        for name, fn in self._pool_listeners.items():
            if event.contains(engine, name, fn):
                event.remove(engine, name, fn)
        if event.contains(engine, "engine_disposed", self._on_disposed):
            event.remove(engine, "engine_disposed", self._on_disposed)
        unwrap_pool(engine.pool)
