"""The acquire path: wrappers on the pool object that see what no pool event shows.

No event fires before a checkout waits, and a ``QueuePool limit ... reached``
``TimeoutError`` fires none at all, so the pool's own methods are wrapped (as instance
attributes of the current pool object):

* ``pool.connect`` — pending callers, wait time, timeouts, successful checkouts and
  their call sites (a re-entrant SingletonThreadPool checkout is not a new one);
* ``pool._do_return_conn`` — every end of a checkout hands its record back through it:
  ``close()``, the garbage collector's checkin of a forgotten connection (sync drivers),
  and detach (also the collector's path on asyncio drivers). One plain call here costs
  less than a checkin *event* listener, which pays SQLAlchemy's dispatch on every return;
* ``pool._invoke_creator`` — time to open a DBAPI connection, and failed attempts;
* ``pool.recreate`` — what ``engine.dispose()`` calls: the replacement pool is wrapped
  in turn. No engine-level event is used for that on purpose: any ConnectionEvents
  listener sets ``engine._has_events``, which puts every Connection of the app on
  SQLAlchemy's slower event-dispatching path.

This is the hot path: closures keep what they need in locals, each checkout and each
return takes the stats lock once, and every piece of bookkeeping is guarded — an error in
the exporter is reported (rate-limited) and never reaches the app, whose own exceptions
pass through untouched.
"""

from __future__ import annotations

import sys
from bisect import bisect_left
from time import perf_counter
from typing import Any

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


def _wrap_return(pool: Pool, stats: PoolStats, reporter: RateLimitedReporter) -> None:
    # Every end of a checkout hands the record back through ``pool._do_return_conn``:
    # checkin (also the garbage collector's, on sync drivers) and detach (also the
    # collector's, on asyncio drivers). Wrapping it costs one plain call, where a checkin
    # *event* listener costs SQLAlchemy's listener dispatch on every return.
    original = pool._do_return_conn
    acquire = stats.lock.acquire
    release = stats.lock.release
    held = stats.held
    leaked = stats.leaked
    use = stats.use
    use_bounds = use.bounds
    use_counts = use.counts

    def do_return_conn(rec: Any) -> None:
        try:
            entry = held.get(rec)
            if entry is not None:
                age = perf_counter() - entry[0]
                ref = entry[3]
                # The proxy is gone: the garbage collector is returning what the app forgot.
                reclaimed = ref is not None and ref() is None
                was_leaked = False
                acquire()
                try:
                    if held.pop(rec, None) is not None:
                        use_counts[bisect_left(use_bounds, age)] += 1
                        use.sum += age
                        if reclaimed:
                            stats.gc_reclaimed += 1
                        if rec in leaked:
                            leaked.discard(rec)
                            was_leaked = True
                finally:
                    release()
                if was_leaked:
                    stats.leak_returned(entry, age, reclaimed)
        except Exception as exc:  # never let bookkeeping reach the app
            reporter.report("checkin", exc)
        original(rec)

    setattr(do_return_conn, _MARK, stats)
    do_return_conn.__wrapped__ = original  # type: ignore[attr-defined]
    pool._do_return_conn = do_return_conn  # type: ignore[method-assign,assignment]


def _wrap_recreate(pool: Pool, stats: PoolStats, reporter: RateLimitedReporter) -> None:
    original = pool.recreate

    def recreate() -> Pool:
        new_pool = original()
        try:
            wrap_pool(new_pool, stats, reporter)
        except Exception as exc:
            reporter.report("recreate", exc)
        return new_pool

    setattr(recreate, _MARK, stats)
    recreate.__wrapped__ = original  # type: ignore[attr-defined]
    pool.recreate = recreate  # type: ignore[method-assign]


def wrap_pool(pool: Pool, stats: PoolStats, reporter: RateLimitedReporter) -> None:
    """Install the acquire-path wrappers on ``pool`` unless already there."""
    if getattr(pool.connect, _MARK, None) is not stats:
        _wrap_connect(pool, stats, reporter)
    if getattr(pool._invoke_creator, _MARK, None) is not stats:
        _wrap_creator(pool, stats, reporter)
    if getattr(pool._do_return_conn, _MARK, None) is not stats:
        _wrap_return(pool, stats, reporter)
    if getattr(pool.recreate, _MARK, None) is not stats:
        _wrap_recreate(pool, stats, reporter)


def unwrap_pool(pool: Pool) -> None:
    """Remove the acquire-path wrappers from ``pool``, if present."""
    for attr in ("connect", "_do_return_conn", "recreate", "_invoke_creator"):
        fn = pool.__dict__.get(attr)
        if fn is not None and getattr(fn, _MARK, None) is not None:
            delattr(pool, attr)
            if attr == "_invoke_creator":
                # Restore the creator wrapper Pool.__init__ built.
                pool._invoke_creator = fn.__wrapped__
