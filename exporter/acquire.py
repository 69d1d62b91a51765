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

This is the hot path: closures keep what they need in locals and update the stats with
single statements that are atomic under the GIL — no lock, which also means a finalizer
that checks a connection in while another update runs on the same thread cannot
deadlock. Every piece of bookkeeping is guarded: an error in the exporter is reported
(rate-limited) and never reaches the app, whose own exceptions pass through untouched.
"""

from __future__ import annotations

import sys
from bisect import bisect_left
from time import perf_counter
from typing import Any

from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from sqlalchemy.pool import Pool, SingletonThreadPool

from exporter import sites
from exporter.logs import RateLimitedReporter
from exporter.stats import PoolStats

_MARK = "_pool_exporter_stats"
_getframe = sys._getframe

try:
    from threading import get_ident
except ImportError:  # pragma: no cover
    from _thread import get_ident


def _install(pool: Pool, attr: str, wrapper: Any, original: Any, stats: PoolStats) -> None:
    """Put ``wrapper`` on ``pool`` as instance attribute ``attr``, marked as ours."""
    setattr(wrapper, _MARK, stats)
    wrapper.__wrapped__ = original
    setattr(pool, attr, wrapper)


def _wrap_connect(pool: Pool, stats: PoolStats, reporter: RateLimitedReporter) -> None:
    original = pool.connect
    held = stats.held
    started = stats.waits_started
    wait = stats.wait
    wait_bounds = wait.bounds
    wait_counts = wait.counts
    first_bound = wait_bounds[0]
    # Checkout-site depths that found the app's frame lately, and (depth, code) pairs
    # already checked to have only SQLAlchemy frames below them (see sites.locate).
    recent: list[int] = []
    verified: dict[int, tuple[int, Any]] = {}
    locate = sites.locate
    capture_sites = stats.capture_sites
    # Only SingletonThreadPool hands the same thread its checked-out proxy again.
    reentrant = isinstance(pool, SingletonThreadPool)

    def connect() -> Any:
        next(started)
        start = perf_counter()
        try:
            fairy = original()
        except PoolTimeoutError:
            elapsed = perf_counter() - start
            stats.checkout_timeouts += 1
            wait_counts[bisect_left(wait_bounds, elapsed)] += 1
            wait.sum += elapsed
            raise
        except BaseException:
            stats.waits_failed += 1
            raise
        now = perf_counter()
        try:
            if reentrant and fairy._counter != 1:
                # A re-entrant checkout hands back a proxy that is already checked out:
                # not a new checkout.
                stats.waits_failed += 1
                return fairy
            code: Any = None
            lasti = 0
            if capture_sites:
                for k in recent:  # the fast path of sites.locate, inlined
                    try:
                        frame = _getframe(1 + k)
                    except ValueError:
                        continue
                    known = verified.get(id(frame.f_code))  # hashing code costs ~70 ns
                    if known is not None and known[0] == k and known[1] is frame.f_code:
                        code = frame.f_code
                        lasti = frame.f_lasti
                        break
                else:
                    site = locate(recent, verified)
                    if site is not None:
                        code, lasti = site
            rec = fairy._connection_record
            elapsed = now - start
            # Each statement below is atomic under the GIL (no call or backward jump
            # inside it), so no lock is needed; readers copy containers in one C call.
            stats.checkouts += 1
            # A healthy pool hands out an idle connection well inside the first bucket.
            wait_counts[0 if elapsed <= first_bound else bisect_left(wait_bounds, elapsed)] += 1
            wait.sum += elapsed
            held[rec] = (now, code, lasti, get_ident(), rec.fairy_ref)
            n = len(held)
            if n > stats.peak:
                stats.peak = n
        except Exception as exc:  # never let bookkeeping reach the app
            reporter.report("checkout", exc)
        return fairy

    _install(pool, "connect", connect, original, stats)


def _wrap_creator(pool: Pool, stats: PoolStats, reporter: RateLimitedReporter) -> None:
    original = pool._invoke_creator
    connect = stats.connect

    def invoke_creator(rec: Any) -> Any:
        start = perf_counter()
        try:
            connection = original(rec)
        except BaseException:
            stats.connect_errors += 1
            raise
        elapsed = perf_counter() - start
        stats.connections_created += 1
        connect.counts[bisect_left(connect.bounds, elapsed)] += 1
        connect.sum += elapsed
        return connection

    _install(pool, "_invoke_creator", invoke_creator, original, stats)


def _wrap_return(pool: Pool, stats: PoolStats, reporter: RateLimitedReporter) -> None:
    # Every end of a checkout hands its record back through ``pool._do_return_conn``.
    original = pool._do_return_conn
    held = stats.held
    leaked = stats.leaked
    use = stats.use
    use_bounds = use.bounds
    use_counts = use.counts

    def do_return_conn(rec: Any) -> None:
        try:
            entry = held.pop(rec, None)
            if entry is not None:
                age = perf_counter() - entry[0]
                use_counts[bisect_left(use_bounds, age)] += 1
                use.sum += age
                ref = entry[4]
                # The proxy is gone: the garbage collector is returning what the app forgot.
                reclaimed = ref is not None and ref() is None
                if reclaimed:
                    stats.gc_reclaimed += 1
                if leaked and leaked.pop(rec, None) is entry:
                    stats.leak_returned(entry, age, reclaimed)
        except Exception as exc:  # never let bookkeeping reach the app
            reporter.report("checkin", exc)
        original(rec)

    _install(pool, "_do_return_conn", do_return_conn, original, stats)


def _wrap_recreate(pool: Pool, stats: PoolStats, reporter: RateLimitedReporter) -> None:
    original = pool.recreate

    def recreate() -> Pool:
        new_pool = original()
        try:
            wrap_pool(new_pool, stats, reporter)
        except Exception as exc:
            reporter.report("recreate", exc)
        return new_pool

    _install(pool, "recreate", recreate, original, stats)


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
