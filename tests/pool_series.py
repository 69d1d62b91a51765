"""The series one instrumented pool exposes, comparable between two ways of instrumenting.

:func:`pool_series` renders one pool of this process exactly as the embedded collector
does, without its ``pool`` label, with the values that depend only on what the app did
(counts, gauges) and ``None`` for the ones that depend on timing (sums, the finite
buckets). :func:`workload` / :func:`async_workload` do the same checkouts on any engine.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import text

import sqlalchemy_pool_exporter
from sqlalchemy_pool_exporter.exposition import pool_families
from sqlalchemy_pool_exporter.instrumentation.snapshot import pool_snapshot

Series = dict[tuple[str, frozenset[tuple[str, str]]], float | None]


def pool_series(name: str) -> Series:
    """Every sample of the pool called ``name``: timing-dependent values are None."""
    (inst,) = [i for i in sqlalchemy_pool_exporter.instrumentations() if i.stats.name == name]
    snap = pool_snapshot(inst, top=0)
    assert snap is not None
    out: Series = {}
    for family in pool_families(("pool",), [((name,), snap)]):
        for sample in family.samples:
            labels = {k: v for k, v in sample.labels.items() if k != "pool"}
            timed = sample.name.endswith("_sum") or (
                sample.name.endswith("_bucket") and labels["le"] != "+Inf"
            )
            value = (
                None if timed or sample.name.endswith("oldest_checkout_seconds") else sample.value
            )
            out[sample.name, frozenset(labels.items())] = value
    return out


def workload(engine: Any) -> None:
    """5 statements, 2 connections held at once, 1 raw connection."""
    for _ in range(5):
        with engine.connect() as conn:
            conn.execute(text("select 1"))
    held = [engine.connect() for _ in range(2)]
    for conn in held:
        conn.close()
    engine.raw_connection().close()


async def async_workload(engine: Any) -> None:
    """:func:`workload` on an AsyncEngine."""
    for _ in range(5):
        async with engine.connect() as conn:
            await conn.execute(text("select 1"))
    held = [await engine.connect() for _ in range(2)]
    for conn in held:
        await conn.close()
    async with engine.connect() as conn:
        await conn.get_raw_connection()
