"""Flask + Flask-SQLAlchemy (3.x): every bind of ``db.engines``, in every serving process.

``db.engine`` and ``db.engines`` need an application context, which an app factory or
module import does not have — so ``instrument(db.engine)`` there raises ``Working
outside of application context``. This extension does it where a context exists: in the
first request each process serves::

    pool_exporter = PoolExporter()          # like db = SQLAlchemy()

    def create_app():
        app = Flask(__name__)
        db.init_app(app)
        pool_exporter.init_app(app)         # or PoolExporter(app) without a factory
        return app

``init_app`` registers a ``before_request`` function that, once per process, takes the
app's Flask-SQLAlchemy extension (``app.extensions["sqlalchemy"]``, or the ``db``
given), and instruments every engine of ``db.engines`` — the default one and each
``SQLALCHEMY_BINDS`` key — with the given ``instrument()`` options; after that it costs
one ``os.getpid()`` per request. Pool names are the usual ``dialect://host/database``;
``names={"users": "users-db"}`` picks them by bind key (``None`` is the default bind).

Processes that serve no request report nothing: a preloading gunicorn master (so only
workers count) and CLI commands — call :meth:`PoolExporter.instrument` there if you
want them. A worker forked after ``init_app`` (gunicorn ``--preload`` with a factory
that ran ``db.create_all()``) first gets fresh pools (``dispose(close=False)``), so it
never talks over the master's connections.
"""

from __future__ import annotations

import os
import threading
import weakref
from collections.abc import Mapping
from typing import Any

from flask import Flask

from sqlalchemy_pool_exporter.instrumentation.engines import check_options, instrument
from sqlalchemy_pool_exporter.logs import get_logger

log = get_logger(__name__)
EXTENSION = "sqlalchemy_pool_exporter"


class _AppState:
    """Per app: the process that ran ``init_app``, and the one whose engines are done."""

    def __init__(self) -> None:
        self.init_pid = os.getpid()
        self.done_pid = 0


class PoolExporter:
    """Flask extension instrumenting every Flask-SQLAlchemy engine of the app."""

    def __init__(
        self,
        app: Flask | None = None,
        *,
        db: Any = None,
        names: Mapping[str | None, str] | None = None,
        **options: Any,
    ) -> None:
        check_options(**options)  # a wrong argument fails here, not in a request
        self.db = db
        self.names = dict(names or {})
        self.options = options
        self._lock = threading.Lock()
        self._apps: weakref.WeakKeyDictionary[Flask, _AppState] = weakref.WeakKeyDictionary()
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Flask) -> None:
        """Instrument ``app``'s engines at the first request of each process."""
        state = self._apps.setdefault(app, _AppState())
        app.extensions[EXTENSION] = self

        def instrument_engines() -> None:
            if state.done_pid != os.getpid():  # once per process; a fork starts again
                self._instrument(app, state)

        app.before_request(instrument_engines)

    def instrument(self, app: Flask) -> list[str]:
        """Instrument ``app``'s engines now (CLI commands, workers that serve no request)."""
        state = self._apps.setdefault(app, _AppState())
        with app.app_context():
            return self._instrument(app, state)

    def _instrument(self, app: Flask, state: _AppState) -> list[str]:
        with self._lock:  # threaded workers: the first request does it, the others wait
            pid = os.getpid()
            if state.done_pid == pid:
                return []
            db = self.db if self.db is not None else app.extensions.get("sqlalchemy")
            state.done_pid = pid
            if db is None:
                log.warning(
                    "no Flask-SQLAlchemy on this app: nothing to instrument",
                    app=app.name,
                    fix="call db.init_app(app) first, or pass PoolExporter(db=db)",
                )
                return []
            try:
                engines = dict(db.engines)  # needs the app context the request pushed
            except Exception as exc:  # e.g. another app's db: say so, serve the request
                log.error("cannot read db.engines", app=app.name, error=str(exc))
                return []
            names: list[str] = []
            errors: set[str] = set()
            for key, engine in engines.items():
                if pid != state.init_pid:  # forked since init_app: the parent's sockets
                    engine.dispose(close=False)
                try:
                    stats = instrument(engine, self.names.get(key), **self.options)
                except Exception as exc:  # a bad option value: say so once, serve the request
                    if str(exc) not in errors:
                        errors.add(str(exc))
                        log.error("cannot instrument engine", bind=key, error=str(exc))
                    continue
                names.append(stats.name)
            return names
