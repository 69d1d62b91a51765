"""Framework helpers in-process: what each does at its hook, on the real framework.

The servers themselves (uvicorn, gunicorn, Celery workers) are driven in
``tests/integration/frameworks``; here: the package imports no framework, the lifespan
wraps the app's own and passes its state, the Flask extension instruments every bind at
the first request and only once, and fresh pools replace inherited ones.
"""

from __future__ import annotations

import asyncio
import logging
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy import Engine, text
from sqlalchemy.ext.asyncio import create_async_engine

import sqlalchemy_pool_exporter
from sqlalchemy_pool_exporter.instrumentation import registry
from sqlalchemy_pool_exporter.integrations.celery import instrument_celery
from sqlalchemy_pool_exporter.integrations.flask import PoolExporter
from sqlalchemy_pool_exporter.integrations.processes import fresh_pools
from sqlalchemy_pool_exporter.integrations.starlette import pool_metrics_lifespan

FRAMEWORKS = ("flask", "flask_sqlalchemy", "celery", "starlette", "fastapi", "gunicorn", "uvicorn")


def names_of_instrumented() -> set[str]:
    return {i.stats.name for i in registry.instrumentations()}


def test_importing_the_package_imports_no_framework() -> None:
    code = (
        "import sys, sqlalchemy_pool_exporter, sqlalchemy_pool_exporter.integrations\n"
        f"print(sorted(m for m in {FRAMEWORKS!r} if m in sys.modules))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert result.stdout.strip() == "[]"


def test_lifespan_instruments_at_startup_and_wraps_the_apps_own(tmp_path: Path) -> None:
    engine = create_async_engine(f"sqlite+aiosqlite:///{tmp_path / 'a.db'}")
    seen: list[str] = []

    @asynccontextmanager
    async def own(app: Any) -> AsyncIterator[dict[str, str]]:
        seen.append(f"start {app}; instrumented={'lifespan-db' in names_of_instrumented()}")
        yield {"state": "kept"}
        seen.append("stop")

    lifespan = pool_metrics_lifespan(engine, lifespan=own, name="lifespan-db")
    assert "lifespan-db" not in names_of_instrumented()  # nothing at import

    async def serve() -> Any:
        async with lifespan("the-app") as state:
            async with engine.connect() as conn:
                await conn.execute(text("SELECT 1"))
            return state

    try:
        assert asyncio.run(serve()) == {"state": "kept"}
        assert seen == ["start the-app; instrumented=True", "stop"]
        (inst,) = [i for i in registry.instrumentations() if i.stats.name == "lifespan-db"]
        assert inst.stats.checkouts == 1
    finally:
        sqlalchemy_pool_exporter.uninstrument(engine)
        asyncio.run(engine.dispose())


def test_lifespan_refuses_what_is_not_an_engine_at_once() -> None:
    with pytest.raises(TypeError, match="takes a sqlalchemy Engine or AsyncEngine, not str"):
        pool_metrics_lifespan("sqlite://")


@pytest.fixture
def flask_app(tmp_path: Path) -> Any:
    db = SQLAlchemy()
    app = Flask("shop")
    app.config["SQLALCHEMY_DATABASE_URI"] = f"sqlite:///{tmp_path / 'main.db'}"
    app.config["SQLALCHEMY_BINDS"] = {"users": f"sqlite:///{tmp_path / 'users.db'}"}
    db.init_app(app)

    @app.get("/")
    def index() -> str:
        return str(db.session.execute(text("SELECT 1")).scalar())

    yield app, db
    with app.app_context():
        for engine in db.engines.values():
            sqlalchemy_pool_exporter.uninstrument(engine)
            engine.dispose()


def test_flask_extension_instruments_every_bind_at_the_first_request(flask_app: Any) -> None:
    app, db = flask_app
    PoolExporter(app, names={"users": "users-db"}, registry=None)
    with app.app_context():
        engines: dict[Any, Engine] = dict(db.engines)
    assert not any(registry.lookup(e) for e in engines.values())  # nothing before a request
    client = app.test_client()
    for _ in range(3):
        assert client.get("/").data == b"1"
    stats = {key: registry.lookup(engine) for key, engine in engines.items()}
    assert stats[None] is not None and stats["users"] is not None
    assert stats["users"].stats.name == "users-db"
    assert stats[None].stats.name.startswith("sqlite:///")  # the usual name from the URL
    assert stats[None].stats.checkouts == 3  # every request counted, the first included


def test_flask_extension_can_instrument_outside_requests(flask_app: Any) -> None:
    app, db = flask_app
    exporter = PoolExporter(registry=None)
    exporter.init_app(app)
    names = exporter.instrument(app)  # no request, no app context needed
    with app.app_context():
        instrumented = [registry.lookup(e) for e in db.engines.values()]
    assert names == [i.stats.name for i in instrumented if i is not None]
    assert len(names) == 2
    assert exporter.instrument(app) == []  # once per process


def test_flask_app_without_flask_sqlalchemy_is_one_line(caplog: pytest.LogCaptureFixture) -> None:
    app = Flask("bare")
    app.get("/")(lambda: "ok")
    PoolExporter(app)
    caplog.set_level(logging.WARNING, logger="sqlalchemy_pool_exporter")
    client = app.test_client()
    assert client.get("/").data == b"ok" and client.get("/").data == b"ok"
    assert [r.getMessage() for r in caplog.records] == [
        "no Flask-SQLAlchemy on this app: nothing to instrument app=bare "
        "fix='call db.init_app(app) first, or pass PoolExporter(db=db)'"
    ]


def test_fresh_pools_replace_the_pool_without_closing_its_connections(
    make_engine: Any,
) -> None:
    engine = make_engine()
    sqlalchemy_pool_exporter.instrument(engine, name="fresh", registry=None)
    inherited = engine.raw_connection()
    inherited.close()  # back in the pool: what a child would inherit
    old_pool = engine.pool
    assert old_pool.checkedin() == 1
    assert fresh_pools() >= 1
    assert engine.pool is not old_pool and engine.pool.checkedin() == 0
    assert old_pool.checkedin() == 1  # not closed: it belongs to the parent
    with engine.connect() as conn:
        conn.execute(text("SELECT 1"))
    (inst,) = [i for i in registry.instrumentations() if i.stats.name == "fresh"]
    assert inst.stats.checkouts == 2  # the new pool is instrumented too


def test_helpers_refuse_an_unknown_option_where_they_are_set_up() -> None:
    for make in (
        lambda: PoolExporter(leak_treshold=5),
        lambda: pool_metrics_lifespan(leak_treshold=5),
        lambda: instrument_celery(leak_treshold=5),
    ):
        with pytest.raises(TypeError, match="leak_treshold"):
            make()


def test_flask_bad_option_value_is_one_line_and_requests_are_served(
    flask_app: Any, caplog: pytest.LogCaptureFixture
) -> None:
    app, _db = flask_app
    PoolExporter(app, leak_threshold=-1, registry=None)
    caplog.set_level(logging.WARNING, logger="sqlalchemy_pool_exporter")
    client = app.test_client()
    assert [client.get("/").status_code for _ in range(3)] == [200, 200, 200]
    assert [r.getMessage() for r in caplog.records] == [
        "cannot instrument engine bind=users error='invalid option leak_threshold: "
        "Input should be greater than or equal to 0'"
    ]  # the same mistake for the other bind is not repeated


def test_flask_db_of_another_app_is_one_line(
    flask_app: Any, caplog: pytest.LogCaptureFixture
) -> None:
    _app, db = flask_app
    other = Flask("other")
    other.get("/")(lambda: "ok")
    PoolExporter(other, db=db)  # db was set up for the fixture's app, not this one
    caplog.set_level(logging.WARNING, logger="sqlalchemy_pool_exporter")
    assert other.test_client().get("/").data == b"ok"
    (record,) = caplog.records
    assert record.getMessage().startswith("cannot read db.engines app=other error=")
