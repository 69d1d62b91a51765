"""Counting the sidecar's limit hits, and logging them without letting anyone flood the log.

Anything an outsider can make the sidecar do many times a second — open connections,
send half a request, push junk, make it run out of file descriptors — must not become
as many log lines: that turns a log pipeline into the victim. :class:`LimitHits` counts
every hit per limit (``pool_exporter_limit_hits_total{limit}``) and logs at most one
line per limit per minute, carrying how many hits there were since the last line.
:class:`ThrottledLog` does the same for any other event (rejected pushes, expired
processes): the first few lines per minute and per key, then one summary.

The limits (``limit`` label values):

* ``connections`` — a connection closed (or refused) to stay under ``max_connections``;
* ``buffered_bytes`` — a request refused, or a stalled one closed, to keep request
  bodies in memory under ``max_buffered_bytes``;
* ``request_timeout`` — a request whose head and body did not arrive within
  ``request_timeout``, or whose response was not read within it;
* ``file_descriptors`` — ``accept()`` failed for lack of file descriptors (EMFILE,
  ENFILE, ENOBUFS, ENOMEM): the listener backs off instead of spinning;
* ``render_queue`` — a ``/metrics`` or ``/api/pools`` request answered 503 because
  enough of them were already rendering or waiting;
* ``series`` — a per-process scrape over ``max_series`` served aggregated series;
* ``retired_pools`` — a retired process's records forgotten to stay within the
  tombstone budget (such a process counts as new if it pushes again).

Two budgets live here too: :class:`ByteBudget` (request bodies being received, shared
by all connections) and :class:`StateBytes` (the latest pushes of live processes).
"""

from __future__ import annotations

import threading
import time
from typing import Any, Protocol

LIMITS = (
    "connections",
    "buffered_bytes",
    "request_timeout",
    "file_descriptors",
    "render_queue",
    "series",
    "retired_pools",
)
PERIOD = 60.0


class ThrottledLog:
    """At most ``burst`` lines per key per ``period``; then one line saying how many more."""

    def __init__(self, logger: Any, *, burst: int = 1, period: float = PERIOD) -> None:
        self._log = logger
        self._burst = burst
        self._period = period
        self._lock = threading.Lock()
        self._window: dict[str, tuple[float, int]] = {}  # key -> (window start, lines)
        self._held: dict[str, int] = {}  # key -> events not logged in the window

    def __call__(self, key: str, level: str, event: str, **fields: Any) -> None:
        """Log ``event`` unless ``key`` used up its lines in this period; count it if so."""
        now = time.monotonic()
        with self._lock:
            start, lines = self._window.get(key, (now, 0))
            if now - start >= self._period:
                start, lines = now, 0
            if lines >= self._burst:
                self._held[key] = self._held.get(key, 0) + 1
                self._window[key] = (start, lines)
                return
            self._window[key] = (start, lines + 1)
            suppressed = self._held.pop(key, 0)
        if suppressed:
            fields["suppressed_since_last"] = suppressed
        getattr(self._log, level)(event, **fields)


class LimitHits:
    """Thread-safe hit counts per limit, logged once a minute per limit."""

    def __init__(self, logger: Any) -> None:
        self._lock = threading.Lock()
        self.counts = dict.fromkeys(LIMITS, 0)
        self._log = ThrottledLog(logger)

    def hit(self, limit: str, n: int = 1, **fields: Any) -> None:
        """Count ``n`` hits of ``limit``; log a line unless one was logged this minute."""
        if n <= 0:
            return
        with self._lock:
            self.counts[limit] = total = self.counts.get(limit, 0) + n
        self._log(limit, "warning", "limit reached", limit=limit, total=total, **fields)

    def snapshot(self) -> dict[str, int]:
        """Current counts."""
        with self._lock:
            return dict(self.counts)


class Holder(Protocol):
    """A connection holding a reservation in a :class:`ByteBudget`."""

    started: float | None

    def overdue(self, now: float) -> bool: ...

    def drop(self, status: int, message: str, limit: str | None) -> None: ...


class ByteBudget:
    """Request body bytes reserved by connections, under one capacity for all listeners."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.used = 0
        self.holders: dict[Any, int] = {}

    def reserve(self, connection: Holder, n: int, now: float) -> bool:
        """Reserve ``n`` bytes, closing overdue holders if needed; False if no room."""
        if self.used + n > self.capacity and n <= self.capacity:
            for victim in sorted(self.holders, key=lambda c: c.started or now):
                if self.used + n <= self.capacity:
                    break
                if victim.overdue(now):
                    victim.drop(408, "request too slow; closed to make room", "buffered_bytes")
        if self.used + n > self.capacity:
            return False
        self.holders[connection] = n
        self.used += n
        return True

    def release(self, connection: Holder) -> None:
        """Give back what ``connection`` reserved."""
        self.used -= self.holders.pop(connection, 0)


class StateBytes:
    """Body bytes of each live process's latest push, under one capacity (``max_state_bytes``).

    What the sidecar keeps of a process is its latest push, parsed: a few times the body's
    size. Charging each process its body length bounds that state by one number the
    operator sets, whatever the processes push.
    """

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.total = 0
        self._lock = threading.Lock()
        self._held: dict[str, int] = {}

    def fits(self, instance: str, n: int) -> bool:
        """True if ``instance`` may hold ``n`` bytes instead of what it holds now."""
        with self._lock:
            return self.total - self._held.get(instance, 0) + n <= self.capacity

    def hold(self, instance: str, n: int) -> None:
        """Charge ``instance`` ``n`` bytes (replacing its previous charge)."""
        with self._lock:
            self.total += n - self._held.get(instance, 0)
            self._held[instance] = n

    def release(self, instance: str) -> None:
        """``instance`` retired: it holds nothing any more."""
        with self._lock:
            self.total -= self._held.pop(instance, 0)
