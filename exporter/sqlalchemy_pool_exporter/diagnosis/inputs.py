"""What every cause reads: one pool, the server view, and the thresholds.

A *pool* is an ``/api/pools`` entry: ``app``, ``pool``, ``info`` (settings as strings),
``gauges``, ``counters``, ``held``, ``sites`` and ``per_process``. The *server view* maps
catalog names to values (label value -> value for labelled series) and carries
``sessions``, the stamped server sessions that hold things up; it is None without a
probe. :class:`Thresholds` says when a number becomes a finding. The helpers read a
number that may be missing as zero (or, for a setting, as -1: unset), so a pool from an
older or partial push is judged on what it has.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy_pool_exporter.diagnosis.findings import Finding

Pool = dict[str, Any]
Server = dict[str, Any] | None


@dataclass(frozen=True)
class Thresholds:
    """When a number becomes a finding (seconds unless named otherwise)."""

    idle_in_transaction_seconds: float = 10.0
    lock_wait_seconds: float = 1.0
    oldest_wait_seconds: float = 1.0
    long_pool_timeout_seconds: float = 10.0
    #: checkouts before "a new connection for nearly every checkout" is judged
    churn_checkouts: int = 20


def gauge(pool: Pool, name: str) -> float:
    """The pool's gauge ``name`` (0 when absent)."""
    return float(pool["gauges"].get(name) or 0)


def counter(pool: Pool, name: str) -> int:
    """The pool's counter ``name`` (0 when absent)."""
    return int(pool["counters"].get(name) or 0)


def pool_finding(pool: Pool, cause: int, summary: str, fix: str, **evidence: Any) -> Finding:
    """A finding about ``pool``, with ``evidence`` as given."""
    return Finding(cause, summary, fix, evidence, app=pool.get("app"), pool=pool.get("pool"))


def checkout_sites(pool: Pool, leaked_only: bool = False) -> list[str]:
    """The sites holding the pool's connections (only those past the leak threshold)."""
    return [
        s["site"]
        for s in pool.get("sites", [])
        if s.get("site") and (s.get("leaked") or not leaked_only)
    ]


def setting_seconds(info: dict[str, Any], key: str) -> float:
    """A duration setting from the pool's info (-1 when unset or not a number)."""
    try:
        return float(info.get(key, -1))
    except (TypeError, ValueError):
        return -1.0
