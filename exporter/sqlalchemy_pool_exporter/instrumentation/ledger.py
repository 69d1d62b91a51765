"""The ledger: what a checkout and a checkin write into one pool's :class:`PoolStats`.

The acquire path's wrappers (:mod:`~sqlalchemy_pool_exporter.instrumentation.acquire`)
time a checkout and find its call site; the ledger books it. A checkout ends the caller's
pending wait (its start time leaves ``stats.waiting``), observes the wait, keeps a held
entry for the connection record and raises the peak. A checkin pops that entry, observes
how long the connection was used, counts it as reclaimed when the garbage collector is
returning a proxy the app dropped, and clears a leak flag raised on it.

There are two implementations with the same behaviour, the same writes in the same order:

* ``_ledger``, compiled from ``_ledger_c/`` when the package is built where a C compiler
  is available. It is the default: every step above is a few machine instructions there
  instead of several interpreted ones, which is most of the exporter's cost per checkout.
  It also provides the connect wrapper itself (``Checkout``), the compiled twin of the one
  in acquire: no Python frame per checkout;
* this module's :class:`PyLedger` and :func:`py_checkin`, used where the compiled module
  is missing, or everywhere when ``SQLALCHEMY_POOL_EXPORTER_PURE_PYTHON=1`` is set (the
  test suite runs both ways).

Each update is atomic under the GIL without a lock: in C because nothing in a call lets
another thread run, here because each is a single statement with no call or backward jump
inside it. Readers copy the containers in one C call.
"""

from __future__ import annotations

import os
from bisect import bisect_left
from collections.abc import Callable
from threading import get_ident
from typing import Any

from sqlalchemy_pool_exporter.instrumentation.stats import PoolStats
from sqlalchemy_pool_exporter.logs import RateLimitedReporter

#: Set to 1 to run the pure Python ledger although the compiled one is installed.
PURE_PYTHON_ENV = "SQLALCHEMY_POOL_EXPORTER_PURE_PYTHON"


class PyLedger:
    """Books checkouts into ``stats``; ``clock`` is the one the wrappers time with."""

    __slots__ = ("_clock", "_held", "_leaked", "_stats", "_use", "_wait", "_waiting")

    def __init__(self, stats: PoolStats, clock: Callable[[], float]) -> None:
        self._stats = stats
        self._clock = clock
        self._held = stats.held
        self._waiting = stats.waiting
        self._leaked = stats.leaked
        self._wait = stats.wait
        self._use = stats.use

    def checked_out(self, fairy: Any, start: float, now: float, code: Any, lasti: int) -> None:
        """Book a checkout: its wait, its held entry and the peak."""
        held = self._held
        wait = self._wait
        # Any equal start time will do: the list holds values, not identities.
        self._waiting.remove(start)
        rec = fairy._connection_record
        elapsed = now - start
        bounds = wait.bounds
        # Most waits of a healthy pool fall in the first bucket: one comparison, no call.
        wait.counts[0 if elapsed <= bounds[0] else bisect_left(bounds, elapsed)] += 1
        wait.sum += elapsed
        held[rec] = (now, code, lasti, get_ident(), rec.fairy_ref)
        # No call between the test and the store: no thread switch either.
        if len(held) > self._stats.peak:
            self._stats.peak = len(held)

    def checked_in(self, rec: Any) -> None:
        """End the checkout of ``rec``, if it is held."""
        entry = self._held.pop(rec, None)
        if entry is None:
            return
        stats = self._stats
        use = self._use
        age = self._clock() - entry[0]
        bounds = use.bounds
        use.counts[0 if age <= bounds[0] else bisect_left(bounds, age)] += 1
        use.sum += age
        # The proxy is gone: the garbage collector is returning what the app forgot.
        reclaimed = entry[4]() is None
        if reclaimed:
            stats.gc_reclaimed += 1
        leaked = self._leaked
        if leaked and leaked.pop(rec, None) is entry:
            stats.leak_returned(entry, age, reclaimed)


def py_checkin(
    ledger: PyLedger, forward: Callable[[Any], None], reporter: RateLimitedReporter
) -> Callable[[Any], None]:
    """A ``record -> None`` that ends the record's checkout in ``ledger``, then ``forward``s it."""
    checked_in = ledger.checked_in

    def end(rec: Any) -> None:
        try:
            checked_in(rec)
        except Exception as exc:  # never let bookkeeping reach the app
            reporter.report("checkin", exc)
        forward(rec)

    return end


Ledger: Any = PyLedger
Checkin: Any = py_checkin
#: The compiled connect wrapper, or None: acquire's Python one runs.
Checkout: Any = None
#: True when the compiled ledger runs.
COMPILED = False
if os.environ.get(PURE_PYTHON_ENV, "") in ("", "0"):
    try:
        from sqlalchemy_pool_exporter.instrumentation import _ledger
    except ImportError:  # built without a C compiler: the same, in Python
        pass
    else:
        Ledger, Checkin, Checkout = _ledger.Ledger, _ledger.Checkin, _ledger.Checkout
        COMPILED = True
