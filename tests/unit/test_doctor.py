"""``doctor`` and ``/api/diagnosis`` against a real in-process sidecar, and invalidation causes.

The sidecar receives real pushes (wire form); ``doctor`` reads its ``/api/diagnosis``
over HTTP and prints findings (exit 1), nothing (exit 0), or one line when it cannot
read the sidecar (exit 2). Invalidation causes are counted on a real SQLite engine.
"""

from __future__ import annotations

import json
import socket
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator

import pytest
from prometheus_client import CollectorRegistry
from sqlalchemy import Engine, text

import sqlalchemy_pool_exporter
from sqlalchemy_pool_exporter.cli import main
from sqlalchemy_pool_exporter.sidecar.server import Sidecar
from sqlalchemy_pool_exporter.sidecar.settings import SidecarSettings
from tests.unit.sidecar_payloads import encode, payload, pool

LEAKED = [
    {"age_seconds": 45.0, "site": "app/views.py:42 in order", "thread": "w-1", "leaked": True}
]


@pytest.fixture
def sc() -> Iterator[Sidecar]:
    sidecar = Sidecar(SidecarSettings(listen="127.0.0.1:0", push_listen="127.0.0.1:0")).start()
    yield sidecar
    sidecar.stop()


def api_base(sc: Sidecar) -> str:
    """The listener serving /api/diagnosis: the push listener, by default."""
    return sc.push_url.removesuffix("/v1/push")


def push(sc: Sidecar, instance: str, pid: int, **pool_args: object) -> None:
    body = encode(payload(instance, pid=pid, pools={"db": pool(**pool_args)}))  # type: ignore[arg-type]
    assert sc.ingest(body) == (200, {"status": "accepted"})


def test_healthy_sidecar_exit_0(sc: Sidecar, capsys: pytest.CaptureFixture[str]) -> None:
    push(sc, "a", 11, checkouts=5)
    assert main(["doctor", "--url", api_base(sc)]) == 0
    assert capsys.readouterr().out == (
        "healthy: no cause found (no database probe: server-side causes not checked)\n"
    )


def test_findings_exit_1_with_cause_evidence_and_fix(
    sc: Sidecar, capsys: pytest.CaptureFixture[str]
) -> None:
    push(
        sc,
        "a",
        11,
        checkouts=5,
        held=LEAKED,
        gauges={"checked_out": 1, "idle": 4, "leaked_connections": 1},
    )
    push(sc, "b", 12, checkouts=3, counters={"fork_inherited_connections": 2})
    assert main(["doctor", "--url", api_base(sc)]) == 1
    out = capsys.readouterr().out
    assert out.splitlines()[:8] == [
        "2 finding(s) (no database probe: server-side causes not checked)",
        "",
        "cause 1: sessions never closed  [shop / db]",
        "  1 connection(s) checked out longer than the leak threshold",
        "  - leaked_connections: 1",
        '  - sites: ["app/views.py:42 in order"]',
        "  - oldest_checkout_seconds: 0.0",
        "  fix: close what you open: `with Session() as s:` / `with engine.connect() as conn:`"
        " at app/views.py:42 in order",
    ]
    assert "cause 10: engines created per request, pools inherited across fork  [shop / db]" in out
    assert "  fix: engine.dispose(close=False) in each child after fork" in out
    assert main(["doctor", "--url", api_base(sc), "--json"]) == 1
    doc = json.loads(capsys.readouterr().out)
    assert doc["healthy"] is False and doc["probe"] is False
    assert [(f["cause"], f["app"], f["pool"]) for f in doc["findings"]] == [
        (1, "shop", "db"),
        (10, "shop", "db"),
    ]
    assert doc["findings"][1]["evidence"] == {"fork_inherited_connections_total": 2}


def test_thresholds_travel_and_bad_ones_are_one_line(
    sc: Sidecar, capsys: pytest.CaptureFixture[str]
) -> None:
    push(
        sc, "a", 11, gauges={"checked_out": 1, "idle": 0, "pending": 1, "oldest_wait_seconds": 0.5}
    )
    assert main(["doctor", "--url", api_base(sc), "--json"]) == 0
    capsys.readouterr()
    args = ["doctor", "--url", api_base(sc), "--json", "--threshold", "oldest_wait_seconds=0.4"]
    assert main(args) == 1
    assert [f["cause"] for f in json.loads(capsys.readouterr().out)["findings"]] == [11]
    assert main(["doctor", "--url", api_base(sc), "--threshold", "nope=1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("sqlalchemy-pool-exporter doctor: --threshold 'nope=1': expected")
    assert len(err.splitlines()) == 1
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(api_base(sc) + "/api/diagnosis?lock_wait_seconds=x", timeout=5)
    assert info.value.code == 400
    assert json.loads(info.value.read()) == {"error": "threshold lock_wait_seconds: not a number"}


def test_unreachable_sidecar_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    assert main(["doctor", "--url", f"http://127.0.0.1:{port}"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(
        f"sqlalchemy-pool-exporter doctor: cannot reach the sidecar at http://127.0.0.1:{port}"
    )
    assert len(err.splitlines()) == 1


def invalidations(registry: CollectorRegistry, name: str) -> dict[tuple[str, str], float]:
    return {
        (s.labels["kind"], s.labels["cause"]): s.value
        for f in registry.collect()
        for s in f.samples
        if s.name == "sqlalchemy_pool_invalidations_total" and s.labels["pool"] == name and s.value
    }


def test_explicit_invalidations_by_kind(make_engine: Callable[..., Engine]) -> None:
    engine = make_engine(pool_size=2, max_overflow=0)
    registry = CollectorRegistry()
    sqlalchemy_pool_exporter.instrument(engine, name="inv", registry=registry)
    with engine.connect() as conn:
        conn.execute(text("select 1"))
        conn.invalidate()
    with engine.connect() as conn:
        conn.connection.invalidate(soft=True)
    raw = engine.raw_connection()
    raw.invalidate(RuntimeError("the app's own reason"))
    raw.close()
    assert invalidations(registry, "inv") == {("hard", "explicit"): 2.0, ("soft", "explicit"): 1.0}


def test_invalidation_outside_any_known_path_is_other(make_engine: Callable[..., Engine]) -> None:
    engine = make_engine(pool_size=2, max_overflow=0)
    registry = CollectorRegistry()
    sqlalchemy_pool_exporter.instrument(engine, name="other", registry=registry)
    raw = engine.raw_connection()
    raw._connection_record.invalidate(RuntimeError("from a library, not the app's call"))
    raw.close()
    assert invalidations(registry, "other") == {("hard", "other"): 1.0}
