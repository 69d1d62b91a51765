"""The metric catalog is the one place a metric is defined: everything else follows it.

* A counter added to a copy of ``protocol/catalog.py`` — and nowhere else — is counted
  in the app, pushed, validated, aggregated by a real sidecar and served by both it and
  the embedded collector.
* Every pool row of the catalog appears, with exactly its name and labels, in an
  embedded scrape and a sidecar scrape of a real engine.
* A push that lacks any catalog field is refused with one line naming the field.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import Engine, text

import sqlalchemy_pool_exporter
from sqlalchemy_pool_exporter.instrumentation import registry as instrumented
from sqlalchemy_pool_exporter.instrumentation.histogram import DEFAULT_BUCKETS
from sqlalchemy_pool_exporter.instrumentation.push import Pusher
from sqlalchemy_pool_exporter.instrumentation.snapshot import ProcessIdentity, process_snapshot
from sqlalchemy_pool_exporter.protocol.catalog import (
    COUNTER_FIELDS,
    GAUGE_FIELDS,
    HISTOGRAM_FIELDS,
    INFO_LABELS,
    POOL_METRICS,
    metric,
)
from sqlalchemy_pool_exporter.protocol.records import Limits, PushRejected
from sqlalchemy_pool_exporter.protocol.validation import parse_push
from tests.sidecars import RunningSidecar

ROOT = Path(__file__).resolve().parents[2]
PACKAGE_DIR = ROOT / "exporter" / "sqlalchemy_pool_exporter"

Samples = set[tuple[str, frozenset[tuple[str, str]]]]

NEW_ROW = """    Metric(
        "sqlalchemy_pool_test_widgets",
        "counter",
        "Widgets.",
        "widgets",
        fields=_one("test_widgets"),
    ),
"""

WIDGETS_APP = """
import json, sys, urllib.request
from prometheus_client import CollectorRegistry, generate_latest
from sqlalchemy import create_engine
import sqlalchemy_pool_exporter
from sqlalchemy_pool_exporter.instrumentation.push import Pusher
from sqlalchemy_pool_exporter.instrumentation.runtime import identity
from sqlalchemy_pool_exporter.sidecar.server import Sidecar
from sqlalchemy_pool_exporter.sidecar.settings import SidecarSettings

engine = create_engine(sys.argv[1])
stats = sqlalchemy_pool_exporter.instrument(engine, name="widgets", registry=None, app="shop")
with engine.connect():
    pass
stats.test_widgets = 3
embedded = CollectorRegistry()
embedded.register(sqlalchemy_pool_exporter.PoolCollector())
settings = SidecarSettings(listen="127.0.0.1:0", push_listen="127.0.0.1:0")
with Sidecar(settings) as sidecar:
    pusher = Pusher(sidecar.push_url, interval=60, timeout=5, token=None, identity=identity)
    pushed = pusher.push()
    with urllib.request.urlopen(sidecar.metrics_url + "/metrics", timeout=10) as response:
        scraped = response.read().decode()
print(json.dumps({
    "package": sqlalchemy_pool_exporter.__file__,
    "pushed": pushed,
    "embedded": generate_latest(embedded).decode(),
    "sidecar": scraped,
}))
"""


def samples(exposition: str, names: set[str]) -> dict[tuple[str, frozenset[Any]], float]:
    """Samples of the families called ``names`` in a text exposition, by (name, labels)."""
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(exposition)
        if family.name in names
        for s in family.samples
    }


def test_a_catalog_row_is_the_only_edit_a_new_counter_needs(tmp_path: Path) -> None:
    copy_root = tmp_path / "src"
    shutil.copytree(
        PACKAGE_DIR,
        copy_root / "sqlalchemy_pool_exporter",
        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"),
    )
    catalog = copy_root / "sqlalchemy_pool_exporter" / "protocol" / "catalog.py"
    source = catalog.read_text()
    anchor = "    # -- pool histograms"
    assert source.count(anchor) == 1
    catalog.write_text(source.replace(anchor, NEW_ROW + anchor))

    env = {k: v for k, v in os.environ.items() if not k.startswith("POOL_EXPORTER_")}
    env["PYTHONPATH"] = str(copy_root)
    result = subprocess.run(
        [sys.executable, "-c", WIDGETS_APP, f"sqlite:///{tmp_path / 'w.db'}"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout.splitlines()[-1])
    assert Path(out["package"]).is_relative_to(copy_root)  # the edited copy ran
    assert out["pushed"] is True

    name = {"sqlalchemy_pool_test_widgets"}
    assert samples(out["sidecar"], name) == {
        ("sqlalchemy_pool_test_widgets_total", frozenset({("app", "shop"), ("pool", "widgets")})): 3
    }
    assert samples(out["embedded"], name) == {
        ("sqlalchemy_pool_test_widgets_total", frozenset({("pool", "widgets")})): 3
    }
    for exposition in (out["sidecar"], out["embedded"]):
        assert "# HELP sqlalchemy_pool_test_widgets_total Widgets.\n" in exposition
        assert "# TYPE sqlalchemy_pool_test_widgets_total counter\n" in exposition
    # The rest still adds up: the pushed checkout is there too.
    assert (
        samples(out["sidecar"], {"sqlalchemy_pool_checkouts"})[
            ("sqlalchemy_pool_checkouts_total", frozenset({("app", "shop"), ("pool", "widgets")}))
        ]
        == 1
    )


def _le(bound: float) -> str:
    return repr(float(bound))


def expected_pool_samples(base: dict[str, str], info: dict[str, str]) -> Samples:
    """Every sample the catalog's pool rows promise for one bounded pool labelled ``base``."""
    out: Samples = set()

    def add(name: str, labels: dict[str, str]) -> None:
        out.add((name, frozenset((base | labels).items())))

    for row in POOL_METRICS:
        if row.kind == "info":
            assert set(info) == set(INFO_LABELS)
            add(row.name, info)
        elif row.kind == "histogram":
            for bound in [*map(_le, DEFAULT_BUCKETS), "+Inf"]:
                add(f"{row.name}_bucket", {"le": bound})
            add(f"{row.name}_count", {})
            add(f"{row.name}_sum", {})
        else:
            name = f"{row.name}_total" if row.kind == "counter" else row.name
            for values, _field in row.fields:
                add(name, dict(zip(row.labels, values, strict=True)))
    return out


def test_every_pool_row_is_served_by_both_sides_with_its_labels(
    make_engine: Callable[..., Engine], tmp_path: Path, sidecar: RunningSidecar
) -> None:
    # Bounded and recycling: every nullable gauge has a value.
    engine = make_engine(pool_size=5, max_overflow=10, pool_recycle=1800)
    sqlalchemy_pool_exporter.instrument(engine, name="rows", registry=None)
    held = engine.connect()
    for _ in range(3):
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    info = {
        "pool_class": "QueuePool",
        "dialect": "sqlite",
        "driver": "pysqlite",
        "database": str(tmp_path / "test.db"),
        "host": "",
        "timeout_seconds": "30",
        "recycle_seconds": "1800",
        "pre_ping": "false",
    }
    names = {row.name for row in POOL_METRICS}
    try:
        embedded = CollectorRegistry()
        embedded.register(sqlalchemy_pool_exporter.PoolCollector())
        got = samples(generate_latest(embedded).decode(), names)
        mine = {key: v for key, v in got.items() if ("pool", "rows") in key[1]}
        assert set(mine) == expected_pool_samples({"pool": "rows"}, info)
        assert mine[("sqlalchemy_pool_checkouts_total", frozenset({("pool", "rows")}))] == 4

        identity = ProcessIdentity(app="catalog")
        pusher = Pusher(sidecar.push_url, 60, 5, None, lambda: identity)
        assert pusher.push()
        got = samples(sidecar.metrics_text(), names)
        mine = {key: v for key, v in got.items() if ("pool", "rows") in key[1]}
        assert set(mine) == expected_pool_samples({"app": "catalog", "pool": "rows"}, info)
        checked_out = frozenset({("app", "catalog"), ("pool", "rows"), ("state", "checked_out")})
        assert mine[("sqlalchemy_pool_connections", checked_out)] == 1
    finally:
        held.close()


def real_push(engine: Engine) -> dict[str, Any]:
    """The push document this process would send for ``engine``'s pool."""
    (inst,) = [i for i in instrumented.instrumentations() if i.engine is engine]
    return process_snapshot(ProcessIdentity(app="catalog"), [inst], seq=1, interval=5.0)


FIELDS = [
    *(("gauges", f) for f in GAUGE_FIELDS),
    *(("counters", f) for f in COUNTER_FIELDS),
    *(("histograms", f) for f in HISTOGRAM_FIELDS),
]


def missing_message(section: str, field: str) -> str:
    """The one line a push without ``section.field`` must be refused with."""
    where = f"pools['db'].{section}.{field}"
    if section == "histograms":
        return f"{where}: expected an object"
    if section == "counters":
        return f"{where}: expected a non-negative integer"
    row = next(r for r in POOL_METRICS if any(f == field for _, f in r.fields))
    if row.nullable:
        return f"{where}: missing (null where the pool has no such limit)"
    if row.integer:
        return f"{where}: expected a non-negative integer"
    return f"{where}: expected a finite non-negative number"


def test_a_push_lacking_any_catalog_field_is_refused_naming_it(
    make_engine: Callable[..., Engine],
) -> None:
    engine = make_engine(pool_size=5, max_overflow=10)
    sqlalchemy_pool_exporter.instrument(engine, name="db", registry=None)
    engine.connect().close()
    doc = real_push(engine)
    limits = Limits()
    parse_push(json.dumps(doc).encode(), limits)  # complete, it is accepted
    for section, field in FIELDS:
        broken = copy.deepcopy(doc)
        del broken["pools"]["db"][section][field]
        with pytest.raises(PushRejected) as refused:
            parse_push(json.dumps(broken).encode(), limits)
        got = (refused.value.status, refused.value.reason, refused.value.message)
        assert got == (400, "invalid_value", missing_message(section, field)), field
    assert metric("sqlalchemy_pool_size").nullable  # the null-or-missing case is exercised
