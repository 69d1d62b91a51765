"""The MySQL and MariaDB probe: the server's side of every pool's connections.

The same ``sqlalchemy_pool_db_*`` series as the PostgreSQL probe, from what both
servers keep in ``information_schema`` (tested on MariaDB 10.11; the queries use only
views and variables MySQL 5.7/8 share):

* ``max_connections`` and the reserved connections, always 0 here: MySQL and MariaDB
  keep their reserve *above* ``max_connections`` (one extra session for ``SUPER`` /
  ``CONNECTION_ADMIN``; MariaDB's ``extra_max_connections`` on the ``extra_port``), so
  every one of the ``max_connections`` slots is open to the apps' pools;
* client sessions by state from ``PROCESSLIST`` (the probe's own session, replication
  and daemon threads left out): ``Sleep`` is ``idle``, or ``idle in transaction`` when
  InnoDB holds an open transaction for the thread (``INNODB_TRX`` joined on
  ``trx_mysql_thread_id``), anything else is ``active``. InnoDB opens a transaction at
  its first statement on an InnoDB table, so a ``BEGIN`` that has touched nothing yet
  reads ``idle``;
* the age of the oldest open transaction per state (``trx_started``, whole seconds);
* sessions waiting for a row lock now and the longest wait (``trx_state = 'LOCK
  WAIT'``, ``trx_wait_started``; both servers, no ``performance_schema`` needed).
  InnoDB refreshes ``INNODB_TRX`` only once nobody has read it for 0.1 s: probes (or
  other readers) more often than that keep seeing an old view;
* deadlocks (``Innodb_deadlocks``, MariaDB; server-wide) — absent where the server has
  no such counter (MySQL);
* the idle limits: ``wait_timeout`` (kind ``wait``: the server closes a connection idle
  that long — "MySQL server has gone away" for the pool that kept it) and MariaDB's
  ``idle_transaction_timeout`` (kind ``idle_in_transaction``), as new sessions get them;
* ``Aborted_clients``: connections the server dropped because the client vanished or
  sat idle past ``wait_timeout``.

Privileges: ``PROCESS`` to see every user's sessions and InnoDB's transactions. Without
it the process list holds the role's own user's sessions only and ``INNODB_TRX`` is
refused: the probe then reports those sessions as ``idle``/``active`` (it cannot tell
an open transaction) and serves no oldest-transaction or lock-wait series.

Safety: one kept session, ``autocommit``, ``SET SESSION TRANSACTION READ ONLY``; only
``SELECT`` and ``SHOW``. Two statements per interval. Each is bounded by the server
(``max_statement_time`` on MariaDB, ``max_execution_time`` on MySQL) and by the
socket's read/write timeouts; connecting by ``connect_timeout``. The probe's own
``wait_timeout`` is raised above its interval so that the server never idles it out
(which would count in ``Aborted_clients``). The password never reaches a log line.
"""

from __future__ import annotations

import math
from typing import Any

import pymysql

from sqlalchemy_pool_exporter.logs import get_logger
from sqlalchemy_pool_exporter.probes.base import ProbeResult, ServerProbe
from sqlalchemy_pool_exporter.probes.url import probe_target

log = get_logger(__name__)

#: Server error: the role lacks a privilege (PROCESS, for INNODB_TRX).
ER_SPECIFIC_ACCESS_DENIED = 1227
#: Threads that are not clients' sessions.
_NOT_CLIENTS = (
    "p.COMMAND NOT IN ('Daemon', 'Binlog Dump', 'Binlog Dump GTID', 'Slave_IO',"
    " 'Slave_SQL', 'Slave_worker') AND p.USER NOT IN ('system user', 'event_scheduler')"
)
_WAIT_AGE = "TIMESTAMPDIFF(MICROSECOND, trx_wait_started, NOW(6)) / 1e6"


def query(*, transactions: bool, idle_transaction_timeout: bool) -> str:
    """The probe's SELECT: one row per session state (one row with NULLs if none)."""
    if transactions:
        sessions = (
            "SELECT CASE WHEN p.COMMAND <> 'Sleep' THEN 'active'"
            " WHEN t.trx_id IS NOT NULL THEN 'idle in transaction' ELSE 'idle' END AS state,"
            " TIMESTAMPDIFF(MICROSECOND, t.trx_started, NOW(6)) / 1e6 AS age"
            " FROM information_schema.PROCESSLIST AS p"
            " LEFT JOIN information_schema.INNODB_TRX AS t ON t.trx_mysql_thread_id = p.ID"
        )
        locks = (
            "(SELECT COUNT(*) FROM information_schema.INNODB_TRX"
            " WHERE trx_state = 'LOCK WAIT'),"
            f" (SELECT COALESCE(MAX({_WAIT_AGE}), 0) FROM information_schema.INNODB_TRX"
            " WHERE trx_state = 'LOCK WAIT')"
        )
    else:
        sessions = (
            "SELECT CASE WHEN p.COMMAND <> 'Sleep' THEN 'active' ELSE 'idle' END AS state,"
            " NULL AS age FROM information_schema.PROCESSLIST AS p"
        )
        locks = "NULL, NULL"
    idle_xact = "@@GLOBAL.idle_transaction_timeout" if idle_transaction_timeout else "NULL"
    return (
        f"SELECT @@GLOBAL.max_connections, @@GLOBAL.wait_timeout, {idle_xact},"
        f" s.state, s.n, s.oldest, {locks}"
        " FROM (SELECT 1) AS one LEFT JOIN ("
        "SELECT state, COUNT(*) AS n, COALESCE(MAX(age), 0) AS oldest FROM ("
        f"{sessions} WHERE p.ID <> CONNECTION_ID() AND {_NOT_CLIENTS}"
        ") AS sessions GROUP BY state) AS s ON 1 = 1"
    )


STATUS = "SHOW GLOBAL STATUS WHERE Variable_name IN ('Innodb_deadlocks', 'Aborted_clients')"
CAPABILITIES = (
    "SHOW GLOBAL VARIABLES WHERE Variable_name IN"
    " ('max_statement_time', 'max_execution_time', 'idle_transaction_timeout')"
)


def connect_kwargs(url: str) -> dict[str, Any]:
    """pymysql.connect() keyword arguments from a ``mysql://``/``mariadb://`` URL.

    Query parameters: those of :data:`~sqlalchemy_pool_exporter.probes.url.MYSQL_QUERY_PARAMETERS`.
    """
    target = probe_target(url)
    if target.backend != "mysql":
        raise ValueError("not a MySQL or MariaDB URL")
    kwargs: dict[str, Any] = {k: v for k, v in target.query.items() if not k.startswith("ssl_")}
    ssl = {k.removeprefix("ssl_"): v for k, v in target.query.items() if k.startswith("ssl_")}
    if ssl:
        kwargs["ssl"] = ssl
    kwargs.update(target.given("database"))
    return kwargs


class MySQLProbe(ServerProbe):
    """Periodic MySQL/MariaDB probe serving the ``sqlalchemy_pool_db_*`` series."""

    def __init__(self, url: str, interval: float = 15.0, statement_timeout: float = 2.0) -> None:
        if not interval > 0 or not statement_timeout > 0:
            raise ValueError("interval and statement_timeout must be positive")
        kwargs = connect_kwargs(url)
        host = kwargs.get("unix_socket") or kwargs.get("host") or "localhost"
        port = kwargs.get("port") or 3306
        database = str(kwargs.get("database") or "")
        super().__init__(
            database=database,
            target=f"mysql://{host}:{port}/{database}",
            secret=str(kwargs.get("password") or "") or None,
            interval=interval,
        )
        self.statement_timeout = statement_timeout
        # The socket's bound is a backstop behind the server's statement limit.
        bound = math.ceil(statement_timeout) + 1
        self._kwargs = {
            **kwargs,
            "connect_timeout": bound,
            "read_timeout": bound,
            "write_timeout": bound,
            "autocommit": True,
            "program_name": "sqlalchemy-pool-exporter",
        }
        self._query_text = ""
        #: None until the first connect: whether the role may read InnoDB's transactions
        self.sees_transactions: bool | None = None

    def _join_timeout(self) -> float:
        return 3 * (self.statement_timeout + 1) + 5

    def _connect(self) -> Any:
        conn = pymysql.connect(**self._kwargs)
        try:
            self._set_up(conn)
        except Exception:
            conn.close()
            raise
        return conn

    def _set_up(self, conn: Any) -> None:
        with conn.cursor() as cur:
            cur.execute(CAPABILITIES)
            present = {str(name) for name, _ in cur.fetchall()}
            cur.execute("SET SESSION TRANSACTION READ ONLY")
            # The probe's session must outlive its own intervals (see module docstring).
            settings = [f"SESSION wait_timeout = {max(60, math.ceil(self.interval * 3))}"]
            if "max_statement_time" in present:  # MariaDB: seconds
                settings.append(f"SESSION max_statement_time = {self.statement_timeout:g}")
            elif "max_execution_time" in present:  # MySQL: milliseconds, SELECT only
                ms = max(1, int(self.statement_timeout * 1000))
                settings.append(f"SESSION max_execution_time = {ms}")
            cur.execute("SET " + ", ".join(settings))
            sees = True
            try:
                cur.execute("SELECT COUNT(*) FROM information_schema.INNODB_TRX")
                cur.fetchall()
            except pymysql.err.OperationalError as exc:
                if exc.args[0] != ER_SPECIFIC_ACCESS_DENIED:
                    raise
                sees = False
        if not sees and self.sees_transactions is not False:
            log.warning(
                "database probe role lacks PROCESS: it sees its own user's sessions only,"
                " and no transactions or lock waits",
                target=self.target,
            )
        self.sees_transactions = sees
        self._query_text = query(
            transactions=sees, idle_transaction_timeout="idle_transaction_timeout" in present
        )

    def _dropped(self, conn: Any, exc: BaseException) -> bool:
        # A socket timeout also closes the connection: that is a slow server, not a restart.
        return not conn.open and "timed out" not in str(exc)

    def _query(self, conn: Any) -> ProbeResult:
        with conn.cursor() as cur:
            cur.execute(self._query_text)
            rows = cur.fetchall()
            cur.execute(STATUS)
            status = {str(name): int(value) for name, value in cur.fetchall()}
        return parse(rows, status, sees_transactions=bool(self.sees_transactions))


def parse(
    rows: list[tuple[Any, ...]], status: dict[str, int], *, sees_transactions: bool
) -> ProbeResult:
    """A :class:`ProbeResult` from the SELECT's rows and the status variables."""
    if not rows:
        raise RuntimeError("probe query returned no row")
    connections: dict[str, int] = {}
    oldest: dict[str, float] = {}
    for row in rows:
        state, count, age = row[3:6]
        if state is not None:
            connections[str(state)] = int(count)
            oldest[str(state)] = max(0.0, float(age or 0))
    first = rows[0]
    idle = {"wait": float(first[1])}
    if first[2] is not None:
        idle["idle_in_transaction"] = float(first[2])
    waiting, lock_age = first[6:8]
    return ProbeResult(
        int(first[0]),
        0,  # the reserve is above max_connections (module docstring)
        connections,
        oldest if sees_transactions else None,
        lock_waiting_connections=None if waiting is None else int(waiting),
        oldest_lock_wait_seconds=None if lock_age is None else max(0.0, float(lock_age)),
        deadlocks=status.get("Innodb_deadlocks"),
        idle_timeouts=idle,
        aborted_clients=status.get("Aborted_clients"),
    )
