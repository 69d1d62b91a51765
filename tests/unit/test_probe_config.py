"""DatabaseProbe without a server: URL handling, password redaction, failure exposition."""

from __future__ import annotations

import logging

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from sqlalchemy_pool_exporter.probes.base import redact
from sqlalchemy_pool_exporter.probes.postgres import DatabaseProbe, connect_kwargs
from tests.integration.pgcluster import free_port

SECRET = "Pr0be-s3cret-value"


def test_sqlalchemy_urls_become_libpq_keywords() -> None:
    assert connect_kwargs(
        f"postgresql+psycopg2://mon:{SECRET}@db.local:6543/shop?sslmode=require"
    ) == {
        "host": "db.local",
        "port": 6543,
        "user": "mon",
        "password": SECRET,
        "dbname": "shop",
        "sslmode": "require",
    }
    assert connect_kwargs("postgresql+asyncpg:///shop?host=/run/postgresql") == {
        "host": "/run/postgresql",
        "dbname": "shop",
    }
    assert connect_kwargs(f"host=db port=5432 dbname=shop password={SECRET}") == {
        "host": "db",
        "port": "5432",
        "dbname": "shop",
        "password": SECRET,
    }


@pytest.mark.parametrize(
    "url",
    [
        f"mysql://u:{SECRET}@db/shop",
        f"mssql://u:{SECRET}@db/shop",
        f"postgresql://u:{SECRET}@db:notaport/shop",
        f"host=db password={SECRET} =broken",
    ],
)
def test_invalid_urls_fail_without_echoing_the_password(url: str) -> None:
    with pytest.raises(ValueError) as info:
        DatabaseProbe(url)
    assert SECRET not in str(info.value)
    # no chained parser error (whose text may quote the URL) in the traceback either
    assert info.value.__cause__ is None
    assert info.value.__context__ is None or info.value.__suppress_context__


def test_redact_removes_the_password_and_password_like_fields() -> None:
    text = f"dsn: host=db password={SECRET} user=u; url postgresql://u:other@db/x; {SECRET}"
    out = redact(text, SECRET)
    assert SECRET not in out and "other" not in out
    assert out == "dsn: host=db password=*** user=u; url postgresql://u:***@db/x; ***"
    assert redact("password='a b\\'c' user=u", None) == "password=*** user=u"


def test_failed_probe_reports_down_and_never_leaks_the_password(
    caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    port = free_port()  # nothing listens there: connection refused
    url = f"postgresql+psycopg2://mon:{SECRET}@127.0.0.1:{port}/shop"
    probe = DatabaseProbe(url, interval=60, statement_timeout=1)
    registry = CollectorRegistry()
    registry.register(probe)
    assert registry.get_sample_value("sqlalchemy_pool_db_up", {"database": "shop"}) == 0.0
    with caplog.at_level(logging.DEBUG, logger="sqlalchemy_pool_exporter"):
        assert probe.probe_once() is False
        assert probe.probe_once() is False
    assert probe.failures == 2
    assert probe.last_error is not None and "Connection refused" in probe.last_error
    output = generate_latest(registry).decode()
    assert registry.get_sample_value("sqlalchemy_pool_db_up", {"database": "shop"}) == 0.0
    assert "sqlalchemy_pool_db_max_connections" not in output
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1  # the first failure warns; repeats go to debug
    assert "database probe failed" in warnings[0].getMessage()
    assert f"127.0.0.1:{port}/shop" in warnings[0].getMessage()
    everything = " ".join(
        [caplog.text, output, probe.last_error, repr(probe), probe.target, *capsys.readouterr()]
    )
    assert SECRET not in everything
    assert "mon" not in probe.target


def test_libpq_echo_of_a_misplaced_password_is_redacted() -> None:
    # libpq quotes bad option values in its error; a password pasted into the wrong
    # field must not come back out through the probe.
    port = free_port()
    probe = DatabaseProbe(f"postgresql://mon:{SECRET}@127.0.0.1:{port}/shop?sslmode={SECRET}")
    assert probe.probe_once() is False
    assert probe.last_error == 'OperationalError: invalid sslmode value: "***"'


def test_interval_and_timeout_must_be_positive() -> None:
    with pytest.raises(ValueError):
        DatabaseProbe("postgresql://127.0.0.1/x", interval=0)
    with pytest.raises(ValueError):
        DatabaseProbe("postgresql://127.0.0.1/x", statement_timeout=-1)
