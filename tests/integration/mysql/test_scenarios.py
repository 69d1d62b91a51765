"""MySQL/MariaDB scenarios on the machine's real server: the ``wait_timeout`` story and the probe.

* A pooled connection idle past ``wait_timeout`` is closed by the server: without
  pre-ping the app gets "MySQL server has gone away" (``cause="error"``), with it the
  pool replaces the connection unseen (``cause="pre_ping"``), and ``pool_recycle`` below
  the limit replaces it before it dies (no invalidation at all). The limits here are
  the app's own sessions' (``SET SESSION wait_timeout`` via ``init_command``).
* ``serve --database-url mysql+pymysql://…`` probes the server; ``doctor`` names cause 5
  (``pool_recycle`` unset against the server's ``wait_timeout``) and 9 (pools above
  ``max_connections``) with the exact fix, before any connection has died.
* A user out of connections (``MAX_USER_CONNECTIONS``): ``connect_errors_total`` exact.
* An open transaction left on a checked-out connection, and a row-lock wait behind it,
  as the probe reports them; a role without ``PROCESS`` sees only its own sessions; the
  probe losing its login and getting it back while the sidecar keeps serving pools.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.exc import OperationalError

import sqlalchemy_pool_exporter
from sqlalchemy_pool_exporter.diagnosis.inputs import Thresholds
from sqlalchemy_pool_exporter.probes.base import ServerProbe
from sqlalchemy_pool_exporter.probes.mysql import MySQLProbe
from tests.conftest import wait_for
from tests.integration.conftest import ROOT, start_sidecar_process
from tests.integration.mysql.server import MariaDB
from tests.integration.postgres.helpers import PoolMetrics, expected_counters, run_doctor
from tests.integration.servers import push_env

APP = Path(__file__).with_name("app.py")


def engine_of(
    engines: list[Engine], url: str, wait_timeout: int | None = None, **kw: Any
) -> Engine:
    connect_args: dict[str, Any] = {"connect_timeout": 5}
    if wait_timeout is not None:  # this session's own limit: no global is touched
        connect_args["init_command"] = f"SET SESSION wait_timeout = {wait_timeout}"
    engine = create_engine(url, connect_args=connect_args, **kw)
    engines.append(engine)
    return engine


def probe_of(probes: list[ServerProbe], url: str) -> tuple[MySQLProbe, CollectorRegistry]:
    probe = MySQLProbe(url, interval=60, statement_timeout=2)
    probes.append(probe)
    registry = CollectorRegistry()
    registry.register(probe)
    return probe, registry


def thread_id(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(text("SELECT CONNECTION_ID()")).scalar_one())


class AppProcess:
    """``app.py``: one instrumented pool in its own process, pushing to ``push_url``."""

    def __init__(self, push_url: str, url: str, name: str, **options: Any) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(APP), url, name, json.dumps(options)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=push_env(push_url, 0.2, "shop"),
            cwd=ROOT,
        )
        assert self.read() == "ready"

    def read(self) -> str:
        assert self.proc.stdout is not None
        return self.proc.stdout.readline().strip()

    def checkout(self) -> None:
        """One checkout, SELECT 1 and return, in the app."""
        assert self.proc.stdin is not None
        self.proc.stdin.write("checkout\n")
        self.proc.stdin.flush()
        assert self.read() == "done"

    def stop(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)


@pytest.fixture
def apps() -> Iterator[list[AppProcess]]:
    started: list[AppProcess] = []
    yield started
    for app in started:
        app.stop()


def gone(db: MariaDB, role: str, thread: int) -> bool:
    return thread not in {t for t, _ in db.threads(role)}


# -- wait_timeout: the connection the pool kept dies ------------------------------------


@pytest.mark.parametrize("pre_ping", [False, True], ids=["no-pre-ping", "pre-ping"])
def test_idle_past_wait_timeout(mariadb: MariaDB, engines: list[Engine], pre_ping: bool) -> None:
    engine = engine_of(
        engines, mariadb.url(), wait_timeout=1, pool_size=1, max_overflow=0, pool_pre_ping=pre_ping
    )
    name = f"wait-{'ping' if pre_ping else 'noping'}"
    metrics = PoolMetrics(engine, name)
    first = thread_id(engine)
    wait_for(lambda: gone(mariadb, "app", first), timeout=10)  # the server closed it idle
    errors: list[str] = []
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except OperationalError as exc:
        errors.append(str(exc.orig))
    cause = "pre_ping" if pre_ping else "error"
    if pre_ping:
        assert errors == []
    else:
        (error,) = errors
        assert error.startswith('(2006, "MySQL server has gone away')
    assert metrics.counters() == expected_counters(
        checkouts=2,
        connections_created=2 if pre_ping else 1,
        connections_closed=1,
        **{f"invalidations_hard_{cause}": 1},
    )
    assert metrics.get("sqlalchemy_pool_invalidations_total", kind="hard", cause=cause) == 1


def test_pool_recycle_below_wait_timeout_replaces_before_death(
    mariadb: MariaDB, engines: list[Engine]
) -> None:
    # Sessions die after 2 s idle; the pool replaces any connection older than 0.5 s.
    engine = engine_of(
        engines, mariadb.url(), wait_timeout=2, pool_size=1, max_overflow=0, pool_recycle=0.5
    )
    metrics = PoolMetrics(engine, "recycled")
    start = time.monotonic()
    seen = [thread_id(engine)]
    while time.monotonic() - start < 2.6:  # longer than wait_timeout in all
        born = time.monotonic()
        wait_for(lambda b=born: time.monotonic() - b > 0.7, step=0.05)  # past pool_recycle
        seen.append(thread_id(engine))
    rounds = len(seen)
    assert len(set(seen)) == rounds  # a fresh session each time, none died in the pool
    assert metrics.counters() == expected_counters(
        checkouts=rounds, connections_created=rounds, connections_closed=rounds - 1
    )


# -- serve + doctor: causes 5 and 9 from the server's own numbers ------------------------


def test_doctor_names_wait_timeout_and_budget_before_anything_dies(
    mariadb: MariaDB, engines: list[Engine], apps: list[AppProcess]
) -> None:
    wait_timeout = mariadb.variable("wait_timeout")
    max_connections = mariadb.variable("max_connections")
    sidecar = start_sidecar_process(
        "--database-url", mariadb.url("monitor"), "--probe-interval", "0.2"
    )
    try:
        db = {"database": mariadb.database}
        sidecar.wait_until(lambda: sidecar.value("sqlalchemy_pool_db_up", **db) == 1)
        assert sidecar.value("sqlalchemy_pool_db_idle_timeout_seconds", kind="wait", **db) == (
            wait_timeout
        )
        assert sidecar.value("sqlalchemy_pool_db_max_connections", **db) == max_connections
        assert sidecar.value("sqlalchemy_pool_db_reserved_connections", **db) == 0
        assert sidecar.value("sqlalchemy_pool_db_deadlocks_total", **db) is not None  # MariaDB
        assert sidecar.value("sqlalchemy_pool_db_aborted_clients_total", **db) is not None
        stale = {"pool_size": 2, "max_overflow": 0}
        budget = {"pool_size": max_connections, "max_overflow": 10, "pool_recycle": 600}
        for name, options in (("stale", stale), ("budget", {**budget, "pool_pre_ping": True})):
            apps.append(AppProcess(sidecar.push_url, mariadb.url(), name, **options))
            apps[-1].checkout()
        sidecar.wait_until(lambda: len(sidecar.api()["pools"]) == 2)
        doctor = run_doctor(sidecar)
        assert doctor.returncode == 1, doctor.stderr
        findings = {(f["cause"], f.get("pool")): f for f in json.loads(doctor.stdout)["findings"]}
        assert sorted(findings, key=str) == [(5, "stale"), (9, None)]
        stale_finding = findings[5, "stale"]
        assert stale_finding["fix"] == (
            f"pool_recycle={int(wait_timeout * 5 / 6)} (below the server's {wait_timeout}s idle"
            " limit); pool_pre_ping=True"
        )
        assert stale_finding["evidence"]["server_idle_limit_seconds"] == wait_timeout
        assert stale_finding["evidence"]["invalidations_error"] == 0  # nothing has died yet
        usable = findings[9, None]["evidence"]
        assert usable["server_usable_connections"] == max_connections
        assert usable["combined_max_connections"] == 2 + max_connections + 10
    finally:
        sidecar.stop()
    assert mariadb.password not in "\n".join(sidecar.log_lines)
    # the app's own diagnose() probes the server through the engine's URL: same cause
    engine = engine_of(engines, mariadb.url(), **stale)
    sqlalchemy_pool_exporter.instrument(engine, name="stale-in-app", registry=None)
    thread_id(engine)
    found = sqlalchemy_pool_exporter.diagnose(engine)
    assert [(f.cause, f.fix) for f in found] == [(5, stale_finding["fix"])]


# -- out of connections ------------------------------------------------------------------


def test_user_out_of_connections_counts_each_refused_connect(
    mariadb: MariaDB, engines: list[Engine]
) -> None:
    engine = engine_of(engines, mariadb.url("limited"), pool_size=3, max_overflow=0)
    metrics = PoolMetrics(engine, "limited")
    with contextlib.ExitStack() as held:
        for _ in range(2):  # MAX_USER_CONNECTIONS 2
            held.enter_context(engine.connect()).execute(text("SELECT 1"))
        for attempt in (1, 2):
            with pytest.raises(OperationalError) as info:
                engine.connect()
            assert info.value.orig.args[0] == 1226  # ER_USER_LIMIT_REACHED
            assert "max_user_connections" in str(info.value.orig)
            assert metrics.counters()["connect_errors"] == attempt
        assert metrics.gauge("checked_out") == 2
    assert metrics.counters() == expected_counters(
        checkouts=2, connections_created=2, connect_errors=2
    )


# -- the server's view: an open transaction, a lock wait, a role without PROCESS ---------


def test_open_transaction_and_lock_wait_as_the_probe_sees_them(
    mariadb: MariaDB, engines: list[Engine], probes: list[ServerProbe]
) -> None:
    engine = engine_of(engines, mariadb.url(), pool_size=3, max_overflow=0, pool_recycle=600)
    metrics = PoolMetrics(engine, "leaky", leak_threshold=0.3)
    probe, registry = probe_of(probes, mariadb.url("monitor"))
    db = {"database": mariadb.database}

    def sample(name: str, **labels: str) -> float | None:
        return registry.get_sample_value(name, {**db, **labels})

    leaked = engine.connect()  # checked out, a row locked, never committed
    leaked.execute(text("UPDATE stock SET n = n - 1 WHERE id = 1"))
    wait_for(lambda: (metrics.gauge("leaked_connections") or 0) == 1)
    assert probe.probe_once(), probe.last_error
    state = "idle in transaction"
    assert sample("sqlalchemy_pool_db_connections", state=state) == 1
    age = sample("sqlalchemy_pool_db_oldest_transaction_seconds", state=state)
    held = metrics.gauge("oldest_checkout_seconds")
    assert age is not None and held is not None
    # trx_started has whole seconds: the server's age is at most 1 s above the app's
    assert held - 0.1 <= age <= held + 1.1
    done = threading.Event()

    def waiter() -> None:
        with engine.connect() as conn:
            conn.execute(text("SET SESSION innodb_lock_wait_timeout = 10"))
            conn.execute(text("UPDATE stock SET n = n - 1 WHERE id = 1"))
            conn.commit()
        done.set()

    thread = threading.Thread(target=waiter)
    thread.start()
    try:

        def waiting() -> bool:
            probe.probe_once()
            return (sample("sqlalchemy_pool_db_oldest_lock_wait_seconds") or 0) >= 0.3

        # InnoDB refreshes its transaction view only once it has gone unread for 0.1 s:
        # polling faster would keep reading the view from before the wait began.
        wait_for(waiting, step=0.15)
        assert sample("sqlalchemy_pool_db_lock_waiting_connections") == 1
        found = sqlalchemy_pool_exporter.diagnose(
            engine,
            database_url=mariadb.url("monitor"),
            thresholds=Thresholds(lock_wait_seconds=0.3, idle_in_transaction_seconds=0.3),
        )
        assert [f.cause for f in found] == [1, 3, 7]
    finally:
        leaked.rollback()
        leaked.close()
        thread.join(15)
    assert done.is_set()

    def cleared() -> bool:
        probe.probe_once()
        return sample("sqlalchemy_pool_db_connections", state=state) == 0

    wait_for(cleared, step=0.15)
    assert sample("sqlalchemy_pool_db_lock_waiting_connections") == 0


def test_a_role_without_process_sees_only_its_own_sessions(
    mariadb: MariaDB, engines: list[Engine], probes: list[ServerProbe]
) -> None:
    app = engine_of(engines, mariadb.url(), pool_size=2, max_overflow=0)
    other = engine_of(engines, mariadb.url("monitor"), pool_size=1, max_overflow=0)
    with contextlib.ExitStack() as held:
        for engine in (app, app, other):
            held.enter_context(engine.connect()).execute(text("SELECT 1"))
        db = {"database": mariadb.database}
        seen: dict[str, dict[str, float | None]] = {}
        for role in ("app", "nobody", "monitor"):
            probe, registry = probe_of(probes, mariadb.url(role))
            assert probe.probe_once(), probe.last_error
            seen[role] = {
                state: registry.get_sample_value(
                    "sqlalchemy_pool_db_connections", {**db, "state": state}
                )
                for state in ("active", "idle", "idle in transaction")
            }
            seen[role]["oldest"] = registry.get_sample_value(
                "sqlalchemy_pool_db_oldest_transaction_seconds", {**db, "state": "idle"}
            )
            seen[role]["locks"] = registry.get_sample_value(
                "sqlalchemy_pool_db_lock_waiting_connections", db
            )
            assert probe.sees_transactions is (role == "monitor")
    # app: its own user's two sessions (autobegin's SELECT 1 touched no InnoDB table)
    no_trx = {"oldest": None, "locks": None}
    assert seen["app"] == {"active": 0, "idle": 2, "idle in transaction": 0, **no_trx}
    assert seen["nobody"] == {"active": 0, "idle": 0, "idle in transaction": 0, **no_trx}
    # PROCESS: every user's, its own excluded (the server may have other clients too)
    assert (seen["monitor"]["idle"] or 0) >= 3
    assert seen["monitor"]["oldest"] == 0 and seen["monitor"]["locks"] == 0


# -- the probe loses its login and gets it back ------------------------------------------


def test_probe_outage_and_recovery_while_pools_are_served(
    mariadb: MariaDB, apps: list[AppProcess]
) -> None:
    user = mariadb.users["flaky"]
    sidecar = start_sidecar_process(
        "--database-url", mariadb.url("flaky"), "--probe-interval", "0.2"
    )
    try:
        db = {"database": mariadb.database}

        def up() -> float | None:
            return sidecar.value("sqlalchemy_pool_db_up", **db)

        def checkouts() -> float | None:
            return sidecar.value("sqlalchemy_pool_checkouts_total", app="shop", pool="busy")

        sidecar.wait_until(lambda: up() == 1)
        app = AppProcess(sidecar.push_url, mariadb.url(), "busy", pool_size=1, max_overflow=0)
        apps.append(app)
        app.checkout()
        sidecar.wait_until(lambda: checkouts() == 1)
        with mariadb.cursor() as cur:  # a new password, and its session cut
            cur.execute(f"ALTER USER '{user}'@'%' IDENTIFIED BY 'changed-{mariadb.password}'")
            for thread, _ in mariadb.threads("flaky"):
                cur.execute(f"KILL {thread}")
        sidecar.wait_until(lambda: up() == 0)
        assert sidecar.value("sqlalchemy_pool_db_max_connections", **db) is None
        app.checkout()
        sidecar.wait_until(lambda: checkouts() == 2)  # pools are served all along
        with mariadb.cursor() as cur:
            cur.execute(f"ALTER USER '{user}'@'%' IDENTIFIED BY '{mariadb.password}'")
        sidecar.wait_until(lambda: up() == 1)
        assert checkouts() == 2
    finally:
        sidecar.stop()
    log = "\n".join(sidecar.log_lines)
    assert "database probe failed" in log and "database probe recovered" in log
    assert "Access denied" in log
    assert mariadb.password not in log
