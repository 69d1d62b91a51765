"""Helpers of the database scenarios: engines on the test server, metric readers, doctor.

Scenario tests read what a user would read: the rendered metrics of a private
prometheus_client registry that ``instrument(engine, registry=...)`` filled.
Every engine tags its backends with ``application_name`` = the pool name, so a test can
find (and kill) exactly its own connections on the shared server. The MySQL scenarios
share the readers, and :func:`run_doctor`: the ``doctor`` command against a real sidecar.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry
from sqlalchemy import Engine, create_engine
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

import sqlalchemy_pool_exporter
from sqlalchemy_pool_exporter.protocol.catalog import COUNTER_FIELDS as COUNTER_NAMES
from tests.integration.pgcluster import PgCluster
from tests.sidecars import ROOT, RunningSidecar


def sync_engine(pg: PgCluster, name: str, **kwargs: Any) -> Engine:
    """A psycopg2 engine as the ``app`` role whose backends are named ``name``."""
    return create_engine(
        pg.url("psycopg2"), connect_args={"application_name": name, "connect_timeout": 5}, **kwargs
    )


def async_engine(pg: PgCluster, name: str, **kwargs: Any) -> AsyncEngine:
    """An asyncpg engine as the ``app`` role whose backends are named ``name``."""
    return create_async_engine(
        pg.url("asyncpg"),
        connect_args={"server_settings": {"application_name": name}, "timeout": 5},
        **kwargs,
    )


class PoolMetrics:
    """The series of one pool as rendered by a private registry."""

    def __init__(
        self,
        engine: Any,
        name: str,
        registry: CollectorRegistry | None = None,
        **instrument_kwargs: Any,
    ) -> None:
        self.name = name
        self.registry = CollectorRegistry() if registry is None else registry
        sqlalchemy_pool_exporter.instrument(
            engine, name=name, registry=self.registry, **instrument_kwargs
        )

    def get(self, metric: str, **labels: str) -> float | None:
        """One sample value, or None when the series is absent."""
        value = self.registry.get_sample_value(metric, {"pool": self.name, **labels})
        return None if value is None else float(value)

    def gauge(self, key: str) -> float | None:
        """``sqlalchemy_pool_<key>``; ``checked_out``/``idle`` read the connections family."""
        if key in ("checked_out", "idle"):
            return self.get("sqlalchemy_pool_connections", state=key)
        return self.get(f"sqlalchemy_pool_{key}")

    def counters(self) -> dict[str, int]:
        """Every counter of the pool, keyed like ``PoolStats`` (invalidations by kind, cause)."""
        out: dict[str, int] = {}
        for family in self.registry.collect():
            for sample in family.samples:
                if sample.labels.get("pool") != self.name or not sample.name.endswith("_total"):
                    continue
                key = sample.name.removeprefix("sqlalchemy_pool_").removesuffix("_total")
                for label in ("kind", "cause"):
                    if label in sample.labels:
                        key = f"{key}_{sample.labels[label]}"
                out[key] = int(sample.value)
        assert set(out) == set(COUNTER_NAMES), out
        return out

    def histogram(self, key: str) -> dict[str, float]:
        """``{le: cumulative count}`` plus ``count`` and ``sum`` of ``sqlalchemy_pool_<key>``."""
        metric = f"sqlalchemy_pool_{key}"
        out: dict[str, float] = {}
        for family in self.registry.collect():
            for sample in family.samples:
                if sample.labels.get("pool") != self.name:
                    continue
                if sample.name == f"{metric}_bucket":
                    out[sample.labels["le"]] = sample.value
                elif sample.name in (f"{metric}_count", f"{metric}_sum"):
                    out[sample.name.rsplit("_", 1)[1]] = sample.value
        return out


def expected_counters(**nonzero: int) -> dict[str, int]:
    """Every counter at 0 except the ones given."""
    assert set(nonzero) <= set(COUNTER_NAMES), nonzero
    return {key: nonzero.get(key, 0) for key in COUNTER_NAMES}


async def until(predicate: Callable[[], Any], timeout: float = 10.0) -> None:
    """Async ``wait_for``: yield to the event loop until ``predicate()`` holds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        await asyncio.sleep(0.01)


def run_doctor(sidecar: RunningSidecar, *flags: str) -> subprocess.CompletedProcess[str]:
    """``doctor --json`` against ``sidecar`` (its push listener serves /api/diagnosis)."""
    return subprocess.run(
        [
            *(sys.executable, "-m", "sqlalchemy_pool_exporter", "doctor"),
            *("--url", sidecar.push_url.removesuffix("/v1/push"), *flags, "--json"),
        ],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=ROOT,
    )
