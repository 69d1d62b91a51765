"""What a push is once validated: typed records, the size limits, and the rejection.

:mod:`sqlalchemy_pool_exporter.protocol.validation` turns a body into a :class:`Push` (or raises
:class:`PushRejected`); the aggregator keeps :class:`PoolData` per live process and
never sees anything else.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

#: Every reason a push can be rejected for (the ``reason`` label values).
REASONS = (
    "unauthorized",
    "body_too_large",
    "malformed_json",
    "schema_version",
    "invalid_value",
    "label_too_long",
    "too_many_pools",
    "too_many_processes",
    "identity_changed",
    "stale_sequence",
    "too_many_groups",
    "implausible_value",
    "state_too_large",
)


class PushRejected(Exception):
    """A push the sidecar refuses: HTTP ``status``, ``reason`` code, one-line ``message``."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason
        self.message = message


@dataclass(slots=True)
class HistData:
    """One cumulative histogram: finite bounds, cumulative counts (last is +Inf), sum, count."""

    buckets: tuple[float, ...]
    counts: tuple[int, ...] | list[int]
    sum: float
    count: int


@dataclass(slots=True)
class PoolData:
    """One pool of one push, validated."""

    info: dict[str, str]
    gauges: dict[str, Any]
    counters: dict[str, int]
    histograms: dict[str, HistData]
    held: list[dict[str, Any]] = field(default_factory=list)


@dataclass(slots=True)
class Push:
    """One validated push."""

    app: str
    instance: str
    pid: int
    host: str
    started_at: float
    seq: int
    interval: float
    final: bool
    sent_at: float
    pools: dict[str, PoolData]
    #: Random per-process secret: only the process that chose ``instance`` knows it.
    key: str = ""

    @property
    def process(self) -> str:
        """The ``process`` label value: ``host/pid``."""
        return f"{self.host}/{self.pid}"


@dataclass(frozen=True)
class Limits:
    """Size limits applied to every push."""

    max_pools: int = 64
    max_label_length: int = 256
    max_body_bytes: int = 1_048_576
