"""The exporter never hurts the app: errors are swallowed and counted; bad input is refused."""

from __future__ import annotations

import logging
import os
import socket
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry
from sqlalchemy import Engine, create_engine, text

import sqlalchemy_pool_exporter
from sqlalchemy_pool_exporter.instrumentation import embedded, runtime


def test_bookkeeping_error_never_reaches_the_app(
    make_engine: Callable[..., Engine],
    registry: CollectorRegistry,
    break_bookkeeping: None,
    caplog: pytest.LogCaptureFixture,
) -> None:
    engine = make_engine()
    sqlalchemy_pool_exporter.instrument(engine, name="broken", registry=registry)
    caplog.set_level(logging.ERROR, logger="sqlalchemy_pool_exporter")
    for _ in range(3):
        with engine.connect() as conn:
            assert conn.execute(text("SELECT 42")).scalar() == 42
    errors = "pool_exporter_errors_total"
    assert registry.get_sample_value(errors, {"where": "checkout"}) == 3
    # The DBAPI connection opened for the first checkout was timed with it too.
    assert registry.get_sample_value(errors, {"where": "connect"}) == 1
    logged = [
        r.getMessage() for r in caplog.records if "exporter error suppressed" in r.getMessage()
    ]
    # rate-limited: once a minute per place however often it happens
    assert [m.split("where=")[1].split()[0] for m in logged] == ["connect", "checkout"]
    assert all("bookkeeping failed" in m for m in logged)


def test_instrument_rejects_what_is_not_an_engine() -> None:
    with pytest.raises(TypeError, match="takes a sqlalchemy Engine or AsyncEngine, not str"):
        sqlalchemy_pool_exporter.instrument("sqlite://")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"leak_threshold": -1}, "leak_threshold"),
        ({"push_url": "ftp://x"}, "push_url"),
        ({"buckets": [1, 0.5]}, "strictly increasing"),
        ({"name": ""}, "name"),
    ],
)
def test_bad_options_raise_one_clear_error_and_change_nothing(
    kwargs: dict[str, object], message: str
) -> None:
    engine = create_engine("sqlite://")
    count = len(sqlalchemy_pool_exporter.instrumentations())
    with pytest.raises(ValueError, match=message) as info:
        sqlalchemy_pool_exporter.instrument(engine, **kwargs)  # type: ignore[arg-type]
    assert "\n" not in str(info.value)
    assert len(sqlalchemy_pool_exporter.instrumentations()) == count
    assert "connect" not in engine.pool.__dict__


def test_bad_environment_is_logged_and_ignored(
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    make_engine: Callable[..., Engine],
) -> None:
    monkeypatch.setenv("POOL_EXPORTER_LEAK_THRESHOLD", "soon")
    monkeypatch.setenv("POOL_EXPORTER_PEAK_WINDOW", "7")
    caplog.set_level(logging.WARNING, logger="sqlalchemy_pool_exporter")
    stats = sqlalchemy_pool_exporter.instrument(make_engine(), name="env", registry=None)
    assert stats.leak_threshold == 30.0
    assert stats.peak_window == 7.0  # the good variable still applies
    [record] = [r for r in caplog.records if "ignoring invalid setting" in r.getMessage()]
    assert record.getMessage() == (
        "ignoring invalid setting variable=POOL_EXPORTER_LEAK_THRESHOLD "
        "problem='Input should be a valid number, unable to parse string as a number'"
    )


def test_environment_sets_options(
    monkeypatch: pytest.MonkeyPatch, make_engine: Callable[..., Engine]
) -> None:
    monkeypatch.setenv("POOL_EXPORTER_LEAK_THRESHOLD", "2.5")
    stats = sqlalchemy_pool_exporter.instrument(make_engine(), name="env2", registry=None)
    assert stats.leak_threshold == 2.5
    other = sqlalchemy_pool_exporter.instrument(
        make_engine(), name="env3", registry=None, leak_threshold=0
    )
    assert other.leak_threshold == 0  # arguments win over the environment


def test_embedded_http_server_serves_pool_metrics(
    make_engine: Callable[..., Engine], registry: CollectorRegistry
) -> None:
    engine = make_engine()
    sqlalchemy_pool_exporter.instrument(engine, name="http", registry=registry)
    engine.raw_connection().close()
    server, _thread = sqlalchemy_pool_exporter.start_http_server(
        0, addr="127.0.0.1", registry=registry
    )
    try:
        port = server.server_address[1]
        body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    finally:
        server.shutdown()
    assert 'sqlalchemy_pool_checkouts_total{pool="http"} 1.0' in body
    assert 'sqlalchemy_pool_connections{pool="http",state="idle"} 1.0' in body


def test_embedded_http_server_on_a_busy_port_warns_once_and_returns_none(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="sqlalchemy_pool_exporter")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert sqlalchemy_pool_exporter.start_http_server(port, addr="127.0.0.1") is None
    assert [r.getMessage() for r in caplog.records] == [
        f"cannot serve metrics; not serving them from this process address=127.0.0.1:{port} "
        "error='Address already in use' hint='multi-process apps: run the sidecar "
        "(sqlalchemy-pool-exporter serve) and set POOL_EXPORTER_PUSH_URL in the app'"
    ]


MULTIPROCESS_LINE = (
    "pool metrics are not in this app's /metrics: prometheus_client multiprocess mode "
    "(PROMETHEUS_MULTIPROC_DIR) serves only its own files fix='multi-process apps: run the "
    "sidecar (sqlalchemy-pool-exporter serve) and set POOL_EXPORTER_PUSH_URL in the app'"
)


def test_multiprocess_mode_is_named_once_at_instrument_time(
    make_engine: Callable[..., Engine],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    tmp_path: Path,
) -> None:
    monkeypatch.setattr(embedded, "_multiprocess_warned", False)
    monkeypatch.delenv("POOL_EXPORTER_PUSH_URL", raising=False)
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    caplog.set_level(logging.WARNING, logger="sqlalchemy_pool_exporter")
    sqlalchemy_pool_exporter.instrument(make_engine(), name="mp1", registry=None)
    sqlalchemy_pool_exporter.instrument(make_engine(), name="mp2", registry=CollectorRegistry())
    assert caplog.records == []  # not in the default registry: the app serves its own
    sqlalchemy_pool_exporter.instrument(make_engine(), name="mp3")
    sqlalchemy_pool_exporter.instrument(make_engine(), name="mp4")
    assert [r.getMessage() for r in caplog.records] == [MULTIPROCESS_LINE]


def test_multiprocess_mode_with_a_sidecar_says_nothing(
    make_engine: Callable[..., Engine],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    tmp_path: Path,
) -> None:
    monkeypatch.setattr(embedded, "_multiprocess_warned", False)
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    caplog.set_level(logging.WARNING, logger="sqlalchemy_pool_exporter")
    embedded.check_multiprocess_mode(pushing=True, registered=True)
    assert caplog.records == []
    embedded.check_multiprocess_mode(pushing=False, registered=True)
    assert [r.getMessage() for r in caplog.records] == [MULTIPROCESS_LINE]


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork()")
def test_forked_child_starts_from_zero_with_its_own_identity(
    make_engine: Callable[..., Engine], registry: CollectorRegistry
) -> None:
    engine = make_engine()
    stats = sqlalchemy_pool_exporter.instrument(engine, name="fork", registry=registry)
    for _ in range(5):
        engine.raw_connection().close()
    parent_identity = runtime.identity().instance
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: report its view, then leave without running atexit hooks
        try:
            engine.dispose(close=False)
            for _ in range(3):
                engine.raw_connection().close()
            report = (
                f"{stats.checkouts} {runtime.identity().instance} {runtime._monitor is not None}"
            )
            os.write(write_fd, report.encode())
        finally:
            os._exit(0)
    os.close(write_fd)
    os.waitpid(pid, 0)
    child_checkouts, child_identity, monitor = os.read(read_fd, 200).decode().split()
    os.close(read_fd)
    assert child_checkouts == "3"
    assert child_identity != parent_identity
    assert monitor == "True"
    assert stats.checkouts == 5
    assert runtime.identity().instance == parent_identity


def test_dropped_engine_is_forgotten_with_its_stats(registry: CollectorRegistry) -> None:
    import gc
    import weakref

    engine = create_engine("sqlite://")
    sqlalchemy_pool_exporter.instrument(engine, name="dropped", registry=registry)
    engine.raw_connection().close()
    assert registry.get_sample_value("sqlalchemy_pool_checkouts_total", {"pool": "dropped"}) == 1
    ref = weakref.ref(engine)
    del engine
    gc.collect()
    assert ref() is None
    assert all(i.stats.name != "dropped" for i in sqlalchemy_pool_exporter.instrumentations())
    assert registry.get_sample_value("sqlalchemy_pool_checkouts_total", {"pool": "dropped"}) is None


def test_instrumenting_never_configures_logging_globally(
    make_engine: Callable[..., Engine],
) -> None:
    import structlog

    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    config = structlog.get_config()
    sqlalchemy_pool_exporter.instrument(
        make_engine(), name="quiet", registry=None, leak_threshold=0.01
    )
    assert root.handlers == handlers and root.level == level
    assert structlog.get_config() == config
