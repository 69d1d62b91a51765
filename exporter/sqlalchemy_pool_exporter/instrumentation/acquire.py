"""The acquire path: wrappers on the pool object that see what no pool event shows.

No event fires before a checkout waits, and a ``QueuePool limit ... reached``
``TimeoutError`` fires none at all, so the pool's own methods are wrapped (as instance
attributes of the current pool object):

* ``pool.connect`` — pending callers and the oldest one's start, wait time, timeouts,
  cancelled waits, successful checkouts and their call sites (a re-entrant
  SingletonThreadPool checkout is not a new one);
* ``pool._do_return_conn`` — every end of a checkout hands its record to it: checkin
  (``close()``, the garbage collector's checkin of a forgotten connection on sync
  drivers) through ``pool._return_conn``, detach (also the collector's path on asyncio
  drivers) directly. Both are wrapped. One plain call costs less than a checkin *event*
  listener, which pays SQLAlchemy's dispatch on every return;
* ``pool._invoke_creator`` — time to open a DBAPI connection, and failed attempts;
* ``pool.recreate`` — what ``engine.dispose()`` calls: the replacement pool is wrapped
  in turn. No engine-level event is used for that on purpose: any ConnectionEvents
  listener sets ``engine._has_events``, which puts every Connection of the app on
  SQLAlchemy's slower event-dispatching path.

This is the hot path. The connect wrapper times the checkout and finds its call site;
what a checkout and a checkin write into the stats is the ledger's job
(:mod:`~sqlalchemy_pool_exporter.instrumentation.ledger`). Where the package was built
with a C compiler, the connect wrapper and the checkin wrapper are the compiled twins of
the Python ones here (``_ledger.Checkout``, ``_ledger.Checkin``): the same steps in the
same order, with no Python frame of their own. Either way no lock is taken — each update
is atomic under the GIL — which also means a finalizer that checks a connection in while
another update runs on the same thread cannot deadlock. Where SQLAlchemy's method only
forwards (``Pool.connect`` to ``_ConnectionFairy._checkout``, ``Pool._return_conn`` to
``_do_return_conn``), the wrapper calls the target itself: one frame less per checkout
and per checkin. Every piece of bookkeeping is guarded: an error in the exporter is
reported (rate-limited) and never reaches the app, whose own exceptions pass through
untouched.
"""

from __future__ import annotations

import sys
from bisect import bisect_left
from time import perf_counter
from typing import Any

from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from sqlalchemy.pool import Pool, SingletonThreadPool

from sqlalchemy_pool_exporter.instrumentation import compat, sites
from sqlalchemy_pool_exporter.instrumentation.ledger import Checkin, Checkout, Ledger
from sqlalchemy_pool_exporter.instrumentation.stats import PoolStats
from sqlalchemy_pool_exporter.logs import RateLimitedReporter

_MARK = "_pool_exporter_stats"
_getframe = sys._getframe


_RESTORE = "_pool_exporter_restore"


def _install(pool: Pool, attr: str, wrapper: Any, original: Any, stats: PoolStats) -> None:
    """Put ``wrapper`` on ``pool`` as instance attribute ``attr``, marked as ours."""
    setattr(wrapper, _MARK, stats)
    wrapper.__wrapped__ = original
    # An instance attribute was there before (Pool.__init__'s creator wrapper, or another
    # library's wrapper): put it back on uninstrument rather than deleting it.
    setattr(wrapper, _RESTORE, attr in vars(pool))
    setattr(pool, attr, wrapper)


def _forwards(method: Any, names: tuple[str, ...]) -> bool:
    """True when ``method`` is SQLAlchemy's one-line forwarder that names exactly ``names``."""
    code = getattr(method, "__code__", None)
    return code is not None and code.co_names == names


def _checkout_call(pool: Pool) -> tuple[Any, Any]:
    """What the connect wrapper calls in place of ``pool.connect()``, and with what."""
    own = pool.__dict__.get("connect")
    if own is not None:  # someone else's wrapper on this very pool: keep calling it
        return (lambda _pool: own()), pool
    method = type(pool).connect
    if method is Pool.connect and _forwards(method, ("_ConnectionFairy", "_checkout")):
        # Pool.connect only forwards to this: calling it directly saves a frame per checkout.
        return compat.fairy_checkout, pool
    return method, pool


def _wrap_connect(pool: Pool, stats: PoolStats, ledger: Any, reporter: RateLimitedReporter) -> None:
    original = pool.connect
    checkout, target = _checkout_call(pool)
    capture_sites = stats.capture_sites
    # Only SingletonThreadPool hands the same thread its checked-out proxy again.
    reentrant = isinstance(pool, SingletonThreadPool)
    if Checkout is not None:  # the compiled twin of connect() below
        finder = sites.SiteFinder(wrapper_frames=0) if capture_sites else None
        compiled = Checkout(
            ledger, checkout, target, finder, _getframe, _wait_failed, reporter, reentrant
        )
        _install(pool, "connect", compiled, original, stats)
        return
    # Few names from outside: each one is copied into the frame on every call.
    waiting = stats.waiting
    checked_out = ledger.checked_out
    finder = sites.SiteFinder()

    def connect() -> Any:
        # A pending caller is its start time in ``waiting`` (see PoolStats.waiting).
        waiting.append(start := perf_counter())
        try:
            fairy = checkout(target)
        except BaseException as exc:
            _wait_failed(stats, start, exc, reporter)
            raise
        now = perf_counter()
        try:
            if reentrant and fairy._counter != 1:
                # A re-entrant checkout hands back a proxy that is already checked out:
                # not a new checkout.
                waiting.remove(start)
                return fairy
            if capture_sites:
                # The app's frame where it was last (see sites.SiteFinder). The depth is
                # never 0: this frame in its own local would keep ``fairy`` alive.
                depth, code = finder.last
                try:
                    frame = _getframe(depth)
                except ValueError:  # a shallower stack than last time
                    code, lasti = finder.locate()
                else:
                    if frame.f_code is code:
                        lasti = frame.f_lasti
                    else:
                        code, lasti = finder.locate()
            else:
                code, lasti = None, 0
        except Exception as exc:  # never let bookkeeping reach the app
            reporter.report("checkout", exc)
            code, lasti = None, 0
        try:
            # Ends the pending wait, observes it, holds the record, raises the peak.
            checked_out(fairy, start, now, code, lasti)
        except Exception as exc:
            reporter.report("checkout", exc)
        return fairy

    _install(pool, "connect", connect, original, stats)


def _wait_failed(
    stats: PoolStats, start: float, exc: BaseException, reporter: RateLimitedReporter
) -> None:
    """Book a wait that ``pool.connect()`` ended with ``exc`` instead of a connection."""
    try:
        if isinstance(exc, PoolTimeoutError):
            elapsed = perf_counter() - start
            timed_out = stats.wait_timed_out  # its count is the timeout counter
            timed_out.counts[bisect_left(timed_out.bounds, elapsed)] += 1
            timed_out.sum += elapsed
        elif not isinstance(exc, Exception):  # cancelled, interrupted: not an error
            stats.checkout_cancellations += 1
        # Any equal start time will do: the list holds values, not identities.
        stats.waiting.remove(start)
    except Exception as error:  # never let bookkeeping replace the app's exception
        reporter.report("checkout", error)


def _wrap_creator(pool: Pool, stats: PoolStats, reporter: RateLimitedReporter) -> None:
    original = getattr(pool, compat.INVOKE_CREATOR)
    connect = stats.connect
    bounds = connect.bounds

    def invoke_creator(rec: Any) -> Any:
        start = perf_counter()
        try:
            connection = original(rec)
        except BaseException:
            stats.connect_errors += 1
            raise
        try:
            elapsed = perf_counter() - start
            stats.connections_created += 1
            connect.counts[bisect_left(bounds, elapsed)] += 1
            connect.sum += elapsed
        except Exception as exc:  # never let bookkeeping reach the app
            reporter.report("connect", exc)
        return connection

    _install(pool, compat.INVOKE_CREATOR, invoke_creator, original, stats)


def _unwrapped(pool: Pool, attr: str) -> Any:
    """``pool.<attr>`` as it was before the exporter wrapped it."""
    fn = getattr(pool, attr)
    return fn.__wrapped__ if getattr(fn, _MARK, None) is not None else fn


def _wrap_return(pool: Pool, stats: PoolStats, ledger: Any, reporter: RateLimitedReporter) -> None:
    # Every end of a checkout hands its record to ``pool._do_return_conn``: checkin through
    # ``pool._return_conn``, detach directly.
    forward = _unwrapped(pool, compat.DO_RETURN_CONN)
    if getattr(getattr(pool, compat.DO_RETURN_CONN), _MARK, None) is not stats:
        end = Checkin(ledger, forward, reporter)
        _install(pool, compat.DO_RETURN_CONN, end, forward, stats)
    method = getattr(type(pool), compat.RETURN_CONN)
    if (
        getattr(getattr(pool, compat.RETURN_CONN), _MARK, None) is not stats
        and compat.RETURN_CONN not in pool.__dict__
        and method is getattr(Pool, compat.RETURN_CONN)
        and _forwards(method, (compat.DO_RETURN_CONN,))
    ):
        # Pool._return_conn only forwards to _do_return_conn: doing the same bookkeeping
        # in its place saves a frame per checkin (``forward`` is the unwrapped original).
        end = Checkin(ledger, forward, reporter)
        _install(pool, compat.RETURN_CONN, end, getattr(pool, compat.RETURN_CONN), stats)


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
    ledger = Ledger(stats, perf_counter)
    if getattr(pool.connect, _MARK, None) is not stats:
        _wrap_connect(pool, stats, ledger, reporter)
    if getattr(getattr(pool, compat.INVOKE_CREATOR), _MARK, None) is not stats:
        _wrap_creator(pool, stats, reporter)
    _wrap_return(pool, stats, ledger, reporter)
    if getattr(pool.recreate, _MARK, None) is not stats:
        _wrap_recreate(pool, stats, reporter)


def unwrap_pool(pool: Pool) -> None:
    """Remove the acquire-path wrappers from ``pool``, if present."""
    for attr in ("connect", "recreate", *(name for name, _ in compat.WRAPPED_METHODS)):
        fn = vars(pool).get(attr)
        if fn is not None and getattr(fn, _MARK, None) is not None:
            if getattr(fn, _RESTORE, False):
                setattr(pool, attr, fn.__wrapped__)
            else:
                delattr(pool, attr)
