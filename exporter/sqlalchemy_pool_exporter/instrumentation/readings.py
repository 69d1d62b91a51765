"""What a reader of a pool's statistics gets: a copy taken at one instant.

Scrapes, pushes, ``/api/pools`` and ``diagnose()`` build nothing from the live fields
of a :class:`~sqlalchemy_pool_exporter.instrumentation.stats.PoolStats`, which the hot
path changes without a lock. :meth:`~sqlalchemy_pool_exporter.instrumentation.stats.PoolStats.read`
copies them (one C call per container, under the readers' lock) into a
:class:`StatsReading` of plain values that agree with each other: the checkout counters
are the observation counts of the very wait histogram it holds, and the checked-out,
leaked and oldest-checkout gauges come from one copy of the held connections. The
longest-held of those come as :class:`HeldConnection` entries, their checkout sites and
threads already turned into text.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class HeldConnection:
    """One checked-out connection as reported to readers."""

    age_seconds: float
    site: str
    thread: str
    leaked: bool
    #: the server's pid of the connection, when attribution recorded it
    backend_pid: int | None = None


@dataclass
class StatsReading:
    """A consistent copy of a pool's event-derived state at one instant."""

    counters: dict[str, int]
    pending: int
    checked_out: int
    peak_checked_out: int
    leaked: int
    oldest_checkout_seconds: float
    histograms: dict[str, Any]
    oldest_wait_seconds: float = 0.0
    held: list[HeldConnection] = field(default_factory=list)
