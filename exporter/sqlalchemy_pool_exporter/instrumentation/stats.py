"""Per-pool statistics kept in the process: the state behind every metric.

One :class:`PoolStats` exists per instrumented engine (not per pool object: the engine's
pool is replaced by ``engine.dispose()``, and counting must carry on across that).

Concepts, as the metrics use them:

* **checked out** — a connection handed to the app by the pool and not yet given back.
  A checkout ends at *checkin* (``close()``, or the garbage collector reclaiming a
  forgotten connection on sync drivers) or at *detach* (the connection leaves the pool's
  custody; asyncio drivers reclaim forgotten connections this way). Invalidation does
  not end a checkout: the app still holds the (now dead) proxy until it closes it.
* **pending** — callers inside ``pool.connect()`` that have not got a connection yet;
  the oldest one's wait so far is ``oldest_wait_seconds``.
* **cancellation** — a wait abandoned by a ``BaseException`` that is not an error: an
  asyncio task cancelled (also by the caller's own ``asyncio.timeout``/``wait_for``),
  ``KeyboardInterrupt``, a gevent timeout.
* **wait** — time spent inside ``pool.connect()``: queue wait, opening a new connection,
  pre-ping. Waits that end in a ``QueuePool limit ... reached`` timeout are observed
  too, so the histogram shows how long callers hung before failing.
* **use** — time from checkout to the end of that checkout.
* **leak** — a checkout older than the leak threshold. It is flagged once (counted in
  ``leaks_total`` and logged with its checkout site) and stays in the leaked gauge until
  it ends.

The hot path updates every field with plain single-statement arithmetic (atomic under
the GIL, see :mod:`~sqlalchemy_pool_exporter.instrumentation.acquire`); metric families
are built from :meth:`PoolStats.read` only when a scrape or a push asks, from the copy
it returns (:mod:`~sqlalchemy_pool_exporter.instrumentation.readings`).
"""

from __future__ import annotations

import threading
import time
import weakref
from collections import deque
from operator import add, attrgetter
from types import CodeType
from typing import Any

from sqlalchemy_pool_exporter.instrumentation import sites
from sqlalchemy_pool_exporter.instrumentation.attribution import record_backend_pid
from sqlalchemy_pool_exporter.instrumentation.histogram import (
    DEFAULT_BUCKETS,
    Histogram,
    cumulative,
)
from sqlalchemy_pool_exporter.instrumentation.readings import HeldConnection, StatsReading
from sqlalchemy_pool_exporter.logs import get_logger
from sqlalchemy_pool_exporter.protocol.catalog import COUNTER_FIELDS

log = get_logger(__name__)

#: (perf_counter at checkout, site code object, site instruction offset, thread ident,
#: weakref to the proxy): flat, so a checkout allocates one tuple (see ``sites``).
HeldEntry = tuple[float, "CodeType | None", int, int, "weakref.ref[Any]"]

#: Counters of the catalog that are checkout counts: each is the observation count of a
#: wait histogram (one statement less per checkout), not an attribute of its own.
HISTOGRAM_COUNTERS = ("checkouts", "checkout_timeouts")
#: Every other counter of the catalog is a plain attribute, incremented where it happens.
PLAIN_COUNTERS = tuple(n for n in COUNTER_FIELDS if n not in HISTOGRAM_COUNTERS)
#: Reads every plain counter of a PoolStats in one C call.
_plain_counters = attrgetter(*PLAIN_COUNTERS)


class PoolStats:
    """Counters, gauges and histograms of one instrumented engine's pool."""

    # Slots: the hot path updates a few of these on every checkout.
    __slots__ = (
        "__weakref__",  # readers may key what they keep per pool by its stats
        "_slot_seconds",
        "_slot_start",
        "_slots",
        "capture_sites",
        "connect",
        "held",
        "leak_threshold",
        "leaked",
        "lock",
        "name",
        "peak",
        "peak_window",
        "use",
        "wait",
        "wait_timed_out",
        "waiting",
        *PLAIN_COUNTERS,
    )

    # The plain counters (PLAIN_COUNTERS), for type checkers; set from the catalog.
    connections_created: int
    connect_errors: int
    connections_closed: int
    invalidations_hard_pre_ping: int
    invalidations_hard_error: int
    invalidations_hard_explicit: int
    invalidations_hard_other: int
    invalidations_soft_pre_ping: int
    invalidations_soft_error: int
    invalidations_soft_explicit: int
    invalidations_soft_other: int
    leaks: int
    gc_reclaimed: int
    fork_inherited_connections: int
    checkout_cancellations: int

    def __init__(
        self,
        name: str,
        *,
        leak_threshold: float = 30.0,
        peak_window: float = 30.0,
        buckets: tuple[float, ...] = DEFAULT_BUCKETS,
    ) -> None:
        self.name = name
        # Serialises the readers (scrapes, pushes, the monitor) among themselves; the hot
        # path takes no lock (see sqlalchemy_pool_exporter.instrumentation.acquire).
        self.lock = threading.RLock()
        self.leak_threshold = leak_threshold
        self.capture_sites = leak_threshold > 0
        for counter in PLAIN_COUNTERS:
            setattr(self, counter, 0)
        # The perf_counter at which each pending caller entered connect(): its length is
        # the pending count, its minimum the oldest wait. A list, not a dict keyed by a
        # wait number: an append and a remove by value (usually of the first item) cost
        # less than numbering, storing and deleting, and a dict whose keys only grow
        # rebuilds its table every few checkouts. Two equal start times are
        # interchangeable, so removing either is right.
        self.waiting: list[float] = []
        self.held: dict[Any, HeldEntry] = {}
        # record -> the held entry that was flagged; a flag counts only while that very
        # entry is still held, so a race with its return can never leave a stale leak.
        self.leaked: dict[Any, HeldEntry] = {}
        # Waits that got a connection, and waits that ended in a pool timeout: their
        # observation counts are the checkouts and checkout_timeouts counters.
        self.wait = Histogram(buckets)
        self.wait_timed_out = Histogram(buckets)
        self.use = Histogram(buckets)
        self.connect = Histogram(buckets)
        # Peak tracking: the hot path raises ``peak`` (max checked out in the current
        # slot); ``rotate_peak`` closes slots so the window slides without a clock read
        # on the hot path.
        self.peak = 0
        self.peak_window = peak_window
        self._slot_seconds = max(peak_window / 6.0, 0.05)
        self._slot_start = time.monotonic()
        self._slots: deque[tuple[float, int]] = deque()

    def reset(self) -> None:
        """Start every counter, gauge and histogram from zero, in place (after fork)."""
        for name in PLAIN_COUNTERS:
            setattr(self, name, 0)
        self.held.clear()
        self.leaked.clear()
        self.waiting.clear()
        for hist in (self.wait, self.wait_timed_out, self.use, self.connect):
            hist.counts[:] = [0] * len(hist.counts)
            hist.sum = 0.0
        self.peak = 0
        self._slots.clear()
        self._slot_start = time.monotonic()

    def release_connections(self) -> None:
        """Let go of every connection record held (the engine is gone): keep the counts."""
        self.held.clear()
        self.leaked.clear()

    @property
    def checkouts(self) -> int:
        """Successful checkouts so far."""
        return self.wait.total()

    @property
    def checkout_timeouts(self) -> int:
        """Checkouts that failed with a pool timeout so far."""
        return self.wait_timed_out.total()

    # -- readers (scrape/push time) -------------------------------------------------

    def rotate_peak(self, now: float | None = None) -> int:
        """Slide the peak window to ``now``; return the peak checked-out count in it."""
        now = time.monotonic() if now is None else now
        with self.lock:
            if now - self._slot_start >= self._slot_seconds:
                self._slots.append((self._slot_start, self.peak))
                self._slot_start = now
                self.peak = len(self.held)
            horizon = now - self.peak_window
            while self._slots and self._slots[0][0] + self._slot_seconds < horizon:
                self._slots.popleft()
            return max([self.peak, len(self.held), *(m for _, m in self._slots)])

    def scan_leaks(self) -> None:
        """Flag checkouts that crossed the leak threshold; count and log each once."""
        if self.leak_threshold <= 0:
            return
        now = time.perf_counter()
        fresh: list[tuple[float, HeldEntry]] = []
        with self.lock:
            held = list(self.held.items())  # one C call: a consistent copy
            for rec, flagged in list(self.leaked.items()):
                if self.held.get(rec) is not flagged:
                    self.leaked.pop(rec, None)  # returned while being flagged
            for rec, entry in held:
                age = now - entry[0]
                if age > self.leak_threshold and self.leaked.get(rec) is not entry:
                    self.leaked[rec] = entry
                    self.leaks += 1
                    fresh.append((age, entry))
        for age, entry in fresh:
            log.warning(
                "connection leak suspected",
                pool=self.name,
                age_seconds=round(age, 3),
                threshold_seconds=self.leak_threshold,
                site=_site(entry),
                thread=sites.thread_name(entry[3]),
            )

    def read(self, *, top: int = 10) -> StatsReading:
        """A consistent copy of every counter, gauge and histogram, plus the ``top`` held."""
        self.scan_leaks()
        peak = self.rotate_peak()
        now = time.perf_counter()
        with self.lock:
            held = list(self.held.items())  # one C call each: consistent copies
            waiting = list(self.waiting)
            got = list(self.wait.counts)
            timed_out = list(self.wait_timed_out.counts)
            # A wait's observation count is a checkout (or a timeout): the counters come
            # from the very copies the wait histogram is made of, so the two always agree.
            checkouts, timeouts = sum(got), sum(timed_out)
            counters = dict(zip(PLAIN_COUNTERS, _plain_counters(self), strict=True))
            counters.update(checkouts=checkouts, checkout_timeouts=timeouts)
            leaked = self.leaked
            flagged = [leaked.get(rec) is e for rec, e in held] if leaked else [False] * len(held)
            waits = map(add, got, timed_out)  # the wait histogram: both kinds of wait
            wait_sum = self.wait.sum + self.wait_timed_out.sum
            reading = StatsReading(
                counters=counters,
                pending=len(waiting),
                checked_out=len(held),
                peak_checked_out=peak,
                leaked=sum(flagged),
                oldest_checkout_seconds=now - min(e[0] for _, e in held) if held else 0.0,
                oldest_wait_seconds=max(0.0, now - min(waiting)) if waiting else 0.0,
                histograms={
                    "wait_seconds": cumulative(self.wait.bounds, waits, wait_sum),
                    "use_seconds": self.use.data(),
                    "connect_seconds": self.connect.data(),
                },
            )
        if top > 0:  # the longest held first; scrapes ask for none
            entries = sorted(
                ((now - e[0], e, f, rec) for (rec, e), f in zip(held, flagged, strict=True)),
                key=lambda item: -item[0],
            )
            reading.held = [
                HeldConnection(
                    age_seconds=age,
                    site=_site(entry),
                    thread=sites.thread_name(entry[3]),
                    leaked=is_leaked,
                    backend_pid=record_backend_pid(rec),
                )
                for age, entry, is_leaked, rec in entries[:top]
            ]
        return reading

    # -- cold paths of the hot-path wrappers -------------------------------------

    def leak_returned(self, entry: HeldEntry, held_seconds: float, reclaimed: bool) -> None:
        """Log that a connection flagged as leaked has finally come back."""
        log.info(
            "leaked connection returned",
            pool=self.name,
            held_seconds=round(held_seconds, 3),
            site=_site(entry),
            reclaimed_by_gc=reclaimed,
        )


def _site(entry: HeldEntry) -> str:
    """Text of the checkout site kept in a held entry."""
    return sites.describe(None if entry[1] is None else (entry[1], entry[2]))
