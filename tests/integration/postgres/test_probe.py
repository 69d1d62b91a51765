"""DatabaseProbe against the throwaway server: exact values, outages, cost, redaction."""

from __future__ import annotations

import logging
import threading
import time
import urllib.request
from typing import Any

import psycopg2
import psycopg2.extensions
import pytest
from prometheus_client import CollectorRegistry, generate_latest, start_http_server

from sqlalchemy_pool_exporter.probes.base import ServerProbe
from sqlalchemy_pool_exporter.probes.postgres import STANDARD_STATES, DatabaseProbe
from tests.integration.pgcluster import PWUSER_PASSWORD, PgCluster, wait_for


def db_series(registry: CollectorRegistry, name: str) -> dict[str, float]:
    """``{state: value}`` of one per-state probe family in ``registry``."""
    out: dict[str, float] = {}
    for family in registry.collect():
        for sample in family.samples:
            if sample.name == name:
                out[sample.labels["state"]] = sample.value
    return out


def make_probe(probes: list[ServerProbe], url: str, **kwargs: Any) -> DatabaseProbe:
    probe = DatabaseProbe(url, **kwargs)
    probes.append(probe)
    return probe


def connect_app(pg: PgCluster, name: str) -> Any:
    return psycopg2.connect(
        host="127.0.0.1",
        port=pg.port,
        user="app",
        dbname="postgres",
        application_name=name,
        connect_timeout=5,
    )


def test_probe_reports_limits_and_backends_by_state_exactly(
    pg: PgCluster, probes: list[ServerProbe]
) -> None:
    probe = make_probe(probes, pg.url(user="monitor"))
    registry = CollectorRegistry()
    registry.register(probe)
    idle = [connect_app(pg, "probe-idle") for _ in range(2)]
    in_tx = connect_app(pg, "probe-in-tx")
    aborted = connect_app(pg, "probe-aborted")
    busy = connect_app(pg, "probe-active")
    busy.autocommit = True
    try:
        before_tx = time.time()
        in_tx.cursor().execute("SELECT 1")  # psycopg2 opens the transaction: BEGIN
        after_tx = time.time()
        with pytest.raises(psycopg2.errors.DivisionByZero):
            aborted.cursor().execute("SELECT 1 / 0")
        cancelled: list[bool] = []

        def sleep() -> None:
            try:
                busy.cursor().execute("SELECT pg_sleep(30)")
            except psycopg2.errors.QueryCanceled:
                cancelled.append(True)

        sleeper = threading.Thread(target=sleep)
        sleeper.start()
        expected = {
            "active": 1.0,
            "idle": 2.0,
            "idle in transaction": 1.0,
            "idle in transaction (aborted)": 1.0,
        }
        # the admin sessions the fixture used exit asynchronously: wait for them to go
        wait_for(
            lambda: (
                probe.probe_once()
                and db_series(registry, "sqlalchemy_pool_db_connections") == expected
            )
        )
        probe_start = time.time()
        assert probe.probe_once()
        probe_end = time.time()
        assert db_series(registry, "sqlalchemy_pool_db_connections") == expected
        labels = {"database": "postgres"}
        assert registry.get_sample_value("sqlalchemy_pool_db_max_connections", labels) == 20
        assert registry.get_sample_value("sqlalchemy_pool_db_reserved_connections", labels) == 3
        assert registry.get_sample_value("sqlalchemy_pool_db_up", labels) == 1
        oldest = db_series(registry, "sqlalchemy_pool_db_oldest_transaction_seconds")
        assert set(oldest) == set(STANDARD_STATES)
        assert oldest["idle"] == 0.0
        assert probe_start - after_tx <= oldest["idle in transaction"] <= probe_end - before_tx
        assert 0 < oldest["idle in transaction (aborted)"] < oldest["idle in transaction"]
        assert 0 < oldest["active"] < oldest["idle in transaction (aborted)"]
    finally:
        busy.cancel()
        sleeper.join(10)
        for conn in (*idle, in_tx, aborted, busy):
            conn.close()
    assert cancelled == [True]  # the active backend was our pg_sleep, cancelled above
    # Closing is visible to the next probe: every state back to 0.
    wait_for(
        lambda: (
            probe.probe_once()
            and set(db_series(registry, "sqlalchemy_pool_db_connections").values()) == {0}
        )
    )


def test_server_down_sets_db_up_0_and_the_endpoint_keeps_serving(
    pg: PgCluster, probes: list[ServerProbe], caplog: pytest.LogCaptureFixture
) -> None:
    registry = CollectorRegistry()
    probe = make_probe(probes, pg.url(user="monitor"), interval=0.1, statement_timeout=1)
    registry.register(probe)
    server, thread = start_http_server(0, addr="127.0.0.1", registry=registry)
    url = f"http://127.0.0.1:{server.server_port}/metrics"

    def scrape() -> str:
        with urllib.request.urlopen(url, timeout=5) as resp:
            assert resp.status == 200
            return str(resp.read().decode())

    try:
        with caplog.at_level(logging.INFO, logger="sqlalchemy_pool_exporter.probes"):
            probe.start()
            wait_for(lambda: 'sqlalchemy_pool_db_up{database="postgres"} 1.0' in scrape())
            pg.stop()
            wait_for(lambda: 'sqlalchemy_pool_db_up{database="postgres"} 0.0' in scrape())
            text = scrape()
            assert "sqlalchemy_pool_db_max_connections" not in text
            failures = probe.failures
            wait_for(lambda: probe.failures >= failures + 3)  # still probing, still serving
            assert 'sqlalchemy_pool_db_up{database="postgres"} 0.0' in scrape()
            pg.start()
            wait_for(lambda: 'sqlalchemy_pool_db_up{database="postgres"} 1.0' in scrape())
            assert 'sqlalchemy_pool_db_max_connections{database="postgres"} 20.0' in scrape()
    finally:
        server.shutdown()
        thread.join(5)
    messages = [r.getMessage().split(" ")[0:3] for r in caplog.records]
    assert messages.count(["database", "probe", "failed"]) == 1  # one warning per outage
    assert messages.count(["database", "probe", "recovered"]) == 1
    assert [
        r.levelname for r in caplog.records if r.getMessage().startswith("database probe failed")
    ] == ["WARNING"]


class CountingConnection(psycopg2.extensions.connection):  # type: ignore[misc]
    """A real psycopg2 connection that counts the statements its cursors send."""

    executed: list[str] = []

    def cursor(self, *args: Any, **kwargs: Any) -> Any:
        kwargs.setdefault("cursor_factory", CountingCursor)
        return super().cursor(*args, **kwargs)


class CountingCursor(psycopg2.extensions.cursor):  # type: ignore[misc]
    def execute(self, query: Any, vars: Any = None) -> Any:
        CountingConnection.executed.append(str(query))
        return super().execute(query, vars)


def test_one_round_trip_per_interval_on_one_connection(
    pg: PgCluster, probes: list[ServerProbe]
) -> None:
    CountingConnection.executed = []
    app_name = "probe-cost"
    probe = make_probe(
        probes,
        pg.url(user="monitor", application_name=app_name),
        interval=0.05,
        connection_factory=CountingConnection,
    )
    probe.start()
    wait_for(lambda: probe.probes >= 20)
    probe.stop()
    assert probe.failures == 0
    # Client side: exactly one statement per probe.
    assert len(CountingConnection.executed) == probe.probes
    # Server side (the monitor role logs every statement it runs): the same count, so
    # psycopg2 sent nothing behind our back (no BEGIN, no SET), and one connection.
    log = pg.server_log()
    statements = [line for line in log.splitlines() if f"app={app_name} LOG:  statement:" in line]
    assert len(statements) == probe.probes
    authorized = [
        line
        for line in log.splitlines()
        if "connection authorized: user=monitor" in line and "application_name=" + app_name in line
    ]
    assert len(authorized) == 1


def test_session_is_read_only_with_statement_timeout(
    pg: PgCluster, probes: list[ServerProbe]
) -> None:
    conns: list[Any] = []

    class Keep(psycopg2.extensions.connection):  # type: ignore[misc]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            conns.append(self)

    probe = make_probe(
        probes, pg.url(user="monitor"), statement_timeout=0.25, connection_factory=Keep
    )
    assert probe.probe_once()
    (conn,) = conns
    assert conn.autocommit
    with conn.cursor() as cur:
        cur.execute("SHOW statement_timeout")
        assert cur.fetchone() == ("250ms",)
        with pytest.raises(psycopg2.errors.ReadOnlySqlTransaction):
            cur.execute("CREATE TABLE probe_must_not_write (x int)")
        with pytest.raises(psycopg2.errors.QueryCanceled):
            cur.execute("SELECT pg_sleep(5)")


def test_kept_connection_killed_by_the_server_is_replaced_without_a_down_report(
    pg: PgCluster, probes: list[ServerProbe]
) -> None:
    probe = make_probe(probes, pg.url(user="monitor", application_name="probe-killed"))
    assert probe.probe_once()
    assert pg.terminate_backends("probe-killed") == 1
    assert probe.probe_once()
    assert probe.failures == 0
    assert len(pg.backends("probe-killed")) == 1


def test_wrong_password_against_the_server_is_never_echoed(
    pg: PgCluster,
    probes: list[ServerProbe],
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    wrong = "Wr0ng-" + PWUSER_PASSWORD[::-1]
    registry = CollectorRegistry()
    probe = make_probe(probes, pg.url(user="pwuser", password=wrong), interval=0.05)
    registry.register(probe)
    with caplog.at_level(logging.DEBUG, logger="sqlalchemy_pool_exporter"):
        probe.start()
        wait_for(lambda: probe.failures >= 3)
        probe.stop()
    assert probe.last_error is not None
    assert 'password authentication failed for user "pwuser"' in probe.last_error
    assert registry.get_sample_value("sqlalchemy_pool_db_up", {"database": "postgres"}) == 0
    text = " ".join(
        [
            caplog.text,
            generate_latest(registry).decode(),
            probe.last_error,
            repr(probe),
            *capsys.readouterr(),
        ]
    )
    assert wrong not in text
    # And the right password works, so the failure above was the password alone.
    good = make_probe(probes, pg.url(user="pwuser", password=PWUSER_PASSWORD))
    assert good.probe_once()
