"""Scenario tests of the PostgreSQL causes: idle limits (5), lock waits (7), the
connection budget (9), and attribution of an open transaction (3) to its process.

Each reproduces the cause on the throwaway cluster, asserts the exact series, and that
the diagnosis (in-process ``diagnose(engine)``, or ``doctor`` against a real ``serve``
with its probe) names the cause's number with the right fix; a healthy PostgreSQL run
yields no finding. Engines here set no application_name of their own, so attribution
stamps them (``sape:<pid>:<app>@<host>``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.exc import OperationalError

import sqlalchemy_pool_exporter
from sqlalchemy_pool_exporter.diagnosis.inputs import Thresholds
from sqlalchemy_pool_exporter.probes.postgres import DatabaseProbe
from tests.integration.conftest import ROOT, start_sidecar_process
from tests.integration.pgcluster import PgCluster, wait_for
from tests.integration.postgres.helpers import PoolMetrics, expected_counters, run_doctor
from tests.integration.servers import push_env

APP = Path(__file__).with_name("attribution_app.py")


def stamped_engine(made: list[Engine], url: str, **kwargs: Any) -> Engine:
    engine = create_engine(url, connect_args={"connect_timeout": 5}, **kwargs)
    made.append(engine)
    return engine


def causes(engine: Engine, **thresholds: Any) -> list[tuple[int, str]]:
    found = sqlalchemy_pool_exporter.diagnose(engine, thresholds=Thresholds(**thresholds))
    return [(f.cause, f.fix) for f in found]


def test_healthy_postgres_run_has_no_finding(pg: PgCluster, engines: list[Engine]) -> None:
    engine = stamped_engine(
        engines, pg.url(), pool_size=2, max_overflow=1, pool_pre_ping=True, pool_recycle=1500
    )
    PoolMetrics(engine, "healthy-pg", stamp_application_name=True)
    for _ in range(5):
        with engine.connect() as conn:
            assert conn.execute(text("SELECT 1")).scalar() == 1
    assert causes(engine) == []


@pytest.fixture
def short_idle_db(pg: PgCluster) -> Iterator[str]:
    """A database whose sessions the server kills after 3 s idle."""
    with pg.admin() as cur:
        cur.execute("DROP DATABASE IF EXISTS idle_limited")
        cur.execute("CREATE DATABASE idle_limited")
        cur.execute("ALTER DATABASE idle_limited SET idle_session_timeout = '3s'")
    yield "idle_limited"
    pg.terminate_backends()
    with pg.admin() as cur:
        cur.execute("DROP DATABASE IF EXISTS idle_limited")


@pytest.mark.parametrize("pre_ping", [True, False])
def test_cause_5_idle_limit_below_recycle(
    pg: PgCluster, engines: list[Engine], short_idle_db: str, pre_ping: bool
) -> None:
    engine = stamped_engine(
        engines,
        pg.url(database=short_idle_db),
        pool_size=1,
        max_overflow=0,
        pool_pre_ping=pre_ping,
    )
    name = f"stale-{'ping' if pre_ping else 'noping'}"
    metrics = PoolMetrics(engine, name, stamp_application_name=True)
    with engine.connect() as conn:
        conn.execute(text("SELECT 1"))
    # A finding before any connection has died: the configuration alone.
    found = causes(engine)
    expected_fix = "pool_recycle=2 (below the server's 3s idle limit)" + (
        "" if pre_ping else "; pool_pre_ping=True"
    )
    assert found == [(5, expected_fix)]
    assert metrics.counters() == expected_counters(checkouts=1, connections_created=1)
    # The server kills the idle pooled connection; the next checkout meets it.
    wait_for(lambda: not pg.backends(), timeout=15)
    errors = []
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except OperationalError as exc:
        errors.append(exc)
    cause = "pre_ping" if pre_ping else "error"
    assert len(errors) == (0 if pre_ping else 1)
    assert metrics.counters() == expected_counters(
        checkouts=2,
        connections_created=2 if pre_ping else 1,
        connections_closed=1,
        **{f"invalidations_hard_{cause}": 1},
    )
    assert metrics.get("sqlalchemy_pool_invalidations_total", kind="hard", cause=cause) == 1
    assert [c for c, _ in causes(engine)] == [5]


def test_cause_7_row_lock_wait_names_the_holder(pg: PgCluster, engines: list[Engine]) -> None:
    with pg.admin() as cur:
        cur.execute("DROP TABLE IF EXISTS stock")
        cur.execute("CREATE TABLE stock (id int PRIMARY KEY, n int)")
        cur.execute("INSERT INTO stock VALUES (1, 10)")
        cur.execute("GRANT ALL ON stock TO app")
    engine = stamped_engine(engines, pg.url(), pool_size=3, max_overflow=0)
    metrics = PoolMetrics(engine, "locks", stamp_application_name=True)
    holder, line = engine.connect(), sys._getframe().f_lineno
    holder.execute(text("UPDATE stock SET n = n - 1 WHERE id = 1"))  # row lock, kept
    done = threading.Event()

    def waiter() -> None:
        with engine.connect() as conn:
            conn.execute(text("UPDATE stock SET n = n - 1 WHERE id = 1"))
            conn.commit()
        done.set()

    thread = threading.Thread(target=waiter)
    thread.start()
    probe = DatabaseProbe(pg.url(user="monitor"))
    registry = CollectorRegistry()
    registry.register(probe)
    try:
        db = {"database": "postgres"}

        def waiting() -> bool:
            probe.probe_once()
            lock_wait = registry.get_sample_value("sqlalchemy_pool_db_oldest_lock_wait_seconds", db)
            return bool(lock_wait and lock_wait >= 0.3)

        wait_for(waiting)
        assert registry.get_sample_value("sqlalchemy_pool_db_lock_waiting_connections", db) == 1
        found = sqlalchemy_pool_exporter.diagnose(
            engine, thresholds=Thresholds(lock_wait_seconds=0.3)
        )
        assert [f.cause for f in found] == [7]
        site = (
            f"tests/integration/postgres/test_causes.py:{line}"
            " in test_cause_7_row_lock_wait_names_the_holder"
        )
        assert f"at {site} (app " in found[0].fix and f"pid {os.getpid()})" in found[0].fix
        (blocking,) = found[0].evidence["blocking"]
        assert (blocking["site"], blocking["pid"], blocking["pool"]) == (site, os.getpid(), "locks")
        assert len(found[0].evidence["blocked"]) == 1
        assert metrics.gauge("checked_out") == 2
    finally:
        holder.rollback()
        holder.close()
        thread.join(10)
        probe.stop()
    assert done.is_set()
    assert causes(engine) == []


def test_cause_9_combined_limits_above_the_server(pg: PgCluster, engines: list[Engine]) -> None:
    # The session's server: max_connections=20 with 3 reserved, so 17 usable.
    engine = stamped_engine(engines, pg.url(), pool_size=15, max_overflow=10)
    PoolMetrics(engine, "budget")
    with engine.connect() as conn:
        conn.execute(text("SELECT 1"))
    found = sqlalchemy_pool_exporter.diagnose(engine)
    assert [f.cause for f in found] == [9]
    assert found[0].evidence["combined_max_connections"] == 25
    assert found[0].evidence["server_usable_connections"] == 17
    assert "stays within 17" in found[0].fix


class AppProcess:
    """One attribution_app.py process, pushing to a sidecar."""

    def __init__(self, pg: PgCluster, push_url: str, mode: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(APP), pg.url(), mode],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=push_env(push_url, 0.2, "shop"),
            cwd=ROOT,
        )
        assert self.proc.stdout is not None
        ready, pid, line = self.proc.stdout.readline().split()
        assert ready == "ready"
        self.pid, self.line = int(pid), int(line)

    def stop(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        self.proc.wait(15)


def test_cause_3_idle_in_transaction_names_the_process(pg: PgCluster) -> None:
    sidecar = start_sidecar_process(
        "--database-url", pg.url(user="monitor"), "--probe-interval", "0.2"
    )
    apps: list[AppProcess] = []
    try:
        culprit = AppProcess(pg, sidecar.push_url, "idle-in-transaction")
        apps.append(culprit)
        bystander = AppProcess(pg, sidecar.push_url, "idle")
        apps.append(bystander)
        site = f"tests/integration/postgres/attribution_app.py:{culprit.line} in main"

        def troubled() -> list[dict[str, Any]]:
            doc = sidecar.api()
            states = {h.get("server_state") for p in doc["pools"] for h in p["held"]}
            return doc.get("server_sessions") if len(states - {None}) == 2 else []

        (session,) = sidecar.wait_until(troubled)
        assert (session["pid"], session["app"], session["site"]) == (culprit.pid, "shop", site)
        assert session["server_state"] == "idle in transaction"
        held = {
            h["process"].rsplit("/", 1)[1]: h for p in sidecar.api()["pools"] for h in p["held"]
        }
        assert held[str(culprit.pid)]["server_state"] == "idle in transaction"
        assert held[str(bystander.pid)]["server_state"] == "idle"
        doctor = run_doctor(sidecar, "--threshold", "idle_in_transaction_seconds=0.2")
        assert doctor.returncode == 1, doctor.stderr
        doc = json.loads(doctor.stdout)
        assert [f["cause"] for f in doc["findings"]] == [3]
        (finding,) = doc["findings"]
        assert finding["app"] == "shop" and finding["pool"] == "shop"
        assert [s["pid"] for s in finding["evidence"]["sessions"]] == [culprit.pid]
        assert f"at {site} (process pid {culprit.pid})" in finding["fix"]
        assert str(bystander.pid) not in json.dumps(finding)
    finally:
        for app in apps:
            app.stop()
        sidecar.stop()
