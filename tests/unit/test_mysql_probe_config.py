"""The MySQL/MariaDB probe's URL handling, probe choice and failure path (no server needed)."""

from __future__ import annotations

import logging

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from pydantic import ValidationError

from sqlalchemy_pool_exporter.probes.factory import make_probe
from sqlalchemy_pool_exporter.probes.mysql import MySQLProbe, connect_kwargs, parse, query
from sqlalchemy_pool_exporter.probes.postgres import DatabaseProbe
from sqlalchemy_pool_exporter.settings import describe_error
from sqlalchemy_pool_exporter.sidecar.settings import SidecarSettings
from tests.integration.pgcluster import free_port

SECRET = "My-s3cret-value"


def test_urls_become_pymysql_keywords() -> None:
    assert connect_kwargs(f"mysql+pymysql://mon:{SECRET}@db:3307/shop?charset=utf8mb4") == {
        "host": "db",
        "port": 3307,
        "user": "mon",
        "password": SECRET,
        "database": "shop",
        "charset": "utf8mb4",
    }
    assert connect_kwargs("mariadb://mon@/shop?unix_socket=/run/mysqld/mysqld.sock&ssl_ca=/ca") == {
        "user": "mon",
        "database": "shop",
        "unix_socket": "/run/mysqld/mysqld.sock",
        "ssl": {"ca": "/ca"},
    }


def test_the_scheme_picks_the_probe() -> None:
    assert type(make_probe("mysql://m@db/shop")) is MySQLProbe
    assert type(make_probe("mariadb+mariadbconnector://m@db/shop")) is MySQLProbe
    assert type(make_probe("postgresql://m@db/shop")) is DatabaseProbe
    assert type(make_probe("host=db dbname=shop")) is DatabaseProbe


@pytest.mark.parametrize(
    ("url", "message"),
    [
        (
            f"mysql://u:{SECRET}@db/shop?init_command={SECRET}",
            "parameter(s) not supported: init_command",
        ),
        (f"mssql://u:{SECRET}@db/shop", "supports PostgreSQL, MySQL and MariaDB, not 'mssql'"),
        (f"mysql://u:{SECRET}@db:port/shop", "database URL could not be parsed"),
    ],
)
def test_bad_urls_are_one_line_without_the_password(url: str, message: str) -> None:
    with pytest.raises(ValueError, match=r"^database ") as info:
        MySQLProbe(url)
    assert str(info.value).endswith(message)
    assert SECRET not in str(info.value)
    # the sidecar refuses it at start, naming the setting, not at the first probe
    with pytest.raises(ValidationError) as at_start:
        SidecarSettings(database_url=url)
    assert describe_error(at_start.value) == (
        "invalid setting POOL_EXPORTER_DATABASE_URL (database_url): " + str(info.value)
    )


def test_each_probe_refuses_the_other_servers_url() -> None:
    with pytest.raises(ValueError, match=r"^not a PostgreSQL URL$"):
        DatabaseProbe("mysql://u@db/shop")
    with pytest.raises(ValueError, match=r"^not a MySQL or MariaDB URL$"):
        MySQLProbe("postgresql://u@db/shop")


def test_unreachable_server_is_down_and_the_password_stays_out(
    caplog: pytest.LogCaptureFixture,
) -> None:
    port = free_port()
    probe = MySQLProbe(f"mysql://mon:{SECRET}@127.0.0.1:{port}/shop", statement_timeout=1)
    registry = CollectorRegistry()
    registry.register(probe)
    with caplog.at_level(logging.DEBUG):
        assert probe.probe_once() is False
    assert probe.failures == 1
    assert registry.get_sample_value("sqlalchemy_pool_db_up", {"database": "shop"}) == 0.0
    output = generate_latest(registry).decode()
    served = [line for line in output.splitlines() if not line.startswith("#")]
    assert served == ['sqlalchemy_pool_db_up{database="shop"} 0.0']
    assert probe.last_error is not None and "Can't connect to MySQL server" in probe.last_error
    for text in (caplog.text, output, probe.last_error, repr(probe), probe.target):
        assert SECRET not in text
    assert repr(probe) == f"MySQLProbe('mysql://127.0.0.1:{port}/shop', interval=15.0)"


def test_a_role_without_process_serves_no_transaction_or_lock_series() -> None:
    sql = query(transactions=False, idle_transaction_timeout=False)
    assert "INNODB_TRX" not in sql
    rows = [(151, 28800, None, "idle", 2, 0, None, None)]
    result = parse(rows, {"Aborted_clients": 4}, sees_transactions=False)
    assert result.connections == {"idle": 2}
    assert result.oldest_transaction_seconds is None
    assert result.lock_waiting_connections is None
    assert result.oldest_lock_wait_seconds is None
    assert result.deadlocks is None  # MySQL: no Innodb_deadlocks status variable
    assert result.aborted_clients == 4
    assert result.idle_timeouts == {"wait": 28800.0}
    assert result.reserved_connections == 0
