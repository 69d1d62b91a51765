"""OpenTelemetry names: derived from the catalog, unique, and what the README's table says."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import Gauge, Histogram, InMemoryMetricReader, Sum
from sqlalchemy import Engine

import sqlalchemy_pool_exporter
from sqlalchemy_pool_exporter.protocol.catalog import (
    BY_NAME,
    OTEL_IDLE_MIN,
    OTEL_SEMCONV,
    POOL_METRICS,
    otel_instrument,
)

README = Path(__file__).resolve().parents[2] / "README.md"
# A row of the OpenTelemetry table: the instrument's name has a dot (other tables'
# second columns, e.g. the causes table's, do not).
ROW = re.compile(r"^\| (.+?) \| `([a-z_]+\.[a-z_.]+)` \| (\w+) \| `([^`]+)` \|$")


def test_names_are_unique_and_semconv_rows_exist() -> None:
    names = [otel_instrument(row)[0] for row in POOL_METRICS]
    assert len(set(names)) == len(names)
    assert OTEL_IDLE_MIN[0] not in names
    assert set(OTEL_SEMCONV) <= set(BY_NAME)
    assert all(n.startswith(("db.client.connection.", "sqlalchemy.pool.")) for n in names)


def kind_of(data: object) -> str:
    if isinstance(data, Histogram):
        return "Histogram"
    if isinstance(data, Gauge):
        return "Gauge"
    assert isinstance(data, Sum)
    return "Counter" if data.is_monotonic else "UpDownCounter"


def test_readme_table_is_what_is_exported(make_engine: Callable[..., Engine]) -> None:
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    engine = make_engine(pool_recycle=3600)  # every nullable gauge has a value
    sqlalchemy_pool_exporter.instrument(engine, registry=None, meter_provider=provider)
    engine.connect().close()
    exported = {
        m.name: (kind_of(m.data), m.unit)
        for rm in reader.get_metrics_data().resource_metrics
        for sm in rm.scope_metrics
        for m in sm.metrics
    }
    provider.shutdown()
    rows = [ROW.match(line) for line in README.read_text().splitlines()]
    table = {m[2]: (m[3], m[4]) for m in rows if m}
    assert table == exported
    for m in filter(None, rows):
        series = re.match(r"`(sqlalchemy_pool_\w+)", m[1])
        if series is None:
            assert m[2] == OTEL_IDLE_MIN[0]
            continue
        row = BY_NAME[series[1].removesuffix("_total")]
        assert otel_instrument(row)[0] == m[2]
