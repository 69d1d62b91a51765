"""Attribution: stamp each PostgreSQL connection with the app process that opened it.

Opt-in (``instrument(engine, stamp_application_name=True)`` or
``POOL_EXPORTER_STAMP_APPLICATION_NAME=true``). Two listeners, neither on the hot path:

* ``do_connect`` (a dialect event, fired once per new DBAPI connection) names the
  connection ``sape:<pid>:<app>@<host>`` through the driver's own connect argument —
  unless the app already set an application_name (connect args, URL query, libpq's
  ``PGAPPNAME``), which is left alone;
* the pool's ``connect`` event records the server's backend pid of the new connection
  in the record's ``info``, so a held connection can be matched to its server session
  (:data:`BACKEND_PID`).

The probe reports the stamped sessions' states; the sidecar joins them to processes
and checkout sites (see :mod:`sqlalchemy_pool_exporter.probes.stamp`).
"""

from __future__ import annotations

import os
import socket
import weakref
from collections.abc import Callable
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import Engine

from sqlalchemy_pool_exporter.logs import RateLimitedReporter
from sqlalchemy_pool_exporter.probes.stamp import make_stamp

#: Key of the backend pid in a connection record's ``info``.
BACKEND_PID = "pool_exporter_backend_pid"
_attached: weakref.WeakKeyDictionary[Engine, dict[str, Callable[..., None]]] = (
    weakref.WeakKeyDictionary()
)


def _name_given(dialect: Any, cparams: dict[str, Any]) -> bool:
    if "application_name" in cparams or os.environ.get("PGAPPNAME"):
        return True
    settings = cparams.get("server_settings") or {}
    return "application_name" in settings or "application_name" in str(cparams.get("dsn", ""))


def backend_pid(dbapi_connection: Any) -> int | None:
    """The server's pid of a PostgreSQL DBAPI connection (psycopg2, psycopg, asyncpg)."""
    conn = getattr(dbapi_connection, "driver_connection", None) or dbapi_connection
    for getter in ("get_backend_pid", "get_server_pid"):
        fn = getattr(conn, getter, None)
        if callable(fn):
            return int(fn())
    info = getattr(conn, "info", None)
    pid = getattr(info, "backend_pid", None)
    return int(pid) if pid is not None else None


def attach(engine: Engine, app: str, reporter: RateLimitedReporter) -> bool:
    """Stamp ``engine``'s new PostgreSQL connections; False for other databases."""
    if engine.dialect.name != "postgresql" or engine in _attached:
        return False
    asyncpg = engine.dialect.driver == "asyncpg"
    host = socket.gethostname()

    def do_connect(dialect: Any, rec: Any, cargs: Any, cparams: dict[str, Any]) -> None:
        try:
            if _name_given(dialect, cparams):
                return
            stamp = make_stamp(os.getpid(), app, host)
            if asyncpg:
                cparams["server_settings"] = {**(cparams.get("server_settings") or {})}
                cparams["server_settings"]["application_name"] = stamp
            else:
                cparams["application_name"] = stamp
        except Exception as exc:  # never let attribution stop a connection
            reporter.report("stamp", exc)

    def on_connect(dbapi_connection: Any, rec: Any) -> None:
        try:
            pid = backend_pid(dbapi_connection)
            if pid is not None:
                rec.info[BACKEND_PID] = pid
        except Exception as exc:
            reporter.report("backend_pid", exc)

    listeners: dict[str, Callable[..., None]] = {"do_connect": do_connect, "connect": on_connect}
    for name, fn in listeners.items():
        event.listen(engine, name, fn)
    _attached[engine] = listeners
    return True


def detach(engine: Engine) -> None:
    """Stop stamping ``engine``'s new connections."""
    listeners = _attached.pop(engine, None) or {}
    for name, fn in listeners.items():
        if event.contains(engine, name, fn):
            event.remove(engine, name, fn)


def record_backend_pid(rec: Any) -> int | None:
    """The backend pid recorded for a connection record, if attribution is on."""
    info = getattr(rec, "info", None)
    return None if info is None else info.get(BACKEND_PID)
