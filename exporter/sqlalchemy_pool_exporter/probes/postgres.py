"""The PostgreSQL probe: what only the server knows about its connections.

Pools see their own side; the server sees every client at once. The probe asks the
server, from a background thread every ``interval`` seconds, for

* ``max_connections`` and the slots reserved for superusers
  (``superuser_reserved_connections``, plus ``reserved_connections`` on PostgreSQL 16+),
  so a dashboard can set the apps' combined pool limits against what the server accepts;
* client backends by ``pg_stat_activity.state`` (the probe's own session excluded);
* the age of the oldest open transaction per state — an ``idle in transaction`` session
  holds locks and snapshots while nobody works on it. PostgreSQL forgets the start of a
  transaction that failed, so for ``idle in transaction (aborted)`` the age is counted
  from the failure (a lower bound);
* backends waiting for a lock now (``wait_event_type = 'Lock'``) and the longest such
  wait (counted from the start of the waiting statement), and the deadlocks the server
  detected in the probed database (``pg_stat_database.deadlocks``);
* the idle limits that kill pooled connections, as the probe's own session sees them
  (server, database and role defaults of the probe's role): ``idle_session_timeout``
  (PostgreSQL 14+) and ``idle_in_transaction_session_timeout``, in seconds, 0 = none;
* the server sessions of app connections stamped with their owner (``application_name``,
  see :mod:`~sqlalchemy_pool_exporter.probes.stamp`): state, lock wait, blockers and
  transaction age per session, which ``/api/pools`` and the diagnosis join to the app
  processes and checkout sites holding them. Not a metric: it names processes.

Cost and bounds: one query, one round trip per interval, on one kept-open connection in
autocommit mode (no ``BEGIN``). ``statement_timeout`` and a read-only session are set in
the connection's startup packet (no extra round trip), ``connect_timeout`` and TCP
keepalives bound a dead network. A failed probe closes the connection; the next one
reconnects. A probe whose reused connection turns out dead (server restarted) reconnects
and retries once at once, so a restart alone does not report the server down.

Scrapes never touch the database: :meth:`DatabaseProbe.collect` serves the last result.
After a failed probe only ``sqlalchemy_pool_db_up 0`` is served (stale numbers would
look current). Every series carries ``database`` (the database name from the URL, never
a user or password), so probes of several databases can share one registry.

The role needs ``pg_monitor`` (or ``pg_read_all_stats``) to see other roles' sessions;
without it their state reads ``unknown``.
"""

from __future__ import annotations

import math
from typing import Any

import psycopg2

from sqlalchemy_pool_exporter.logs import get_logger
from sqlalchemy_pool_exporter.probes.base import ProbeResult, ServerProbe
from sqlalchemy_pool_exporter.probes.stamp import STAMP_MARK, parse_stamp
from sqlalchemy_pool_exporter.probes.url import probe_target

log = get_logger(__name__)

#: ``application_name`` prefix of the sessions an instrumented app stamped (see
#: :mod:`sqlalchemy_pool_exporter.probes.stamp`); at most this many are reported.
STAMP_PREFIX = STAMP_MARK
MAX_SESSIONS = 500

#: States always exported (0 when absent), so dashboard series do not come and go.
STANDARD_STATES = ("active", "idle", "idle in transaction", "idle in transaction (aborted)")

#: The whole probe: settings and per-state backend counts and oldest transaction ages.
#: The LEFT JOIN keeps one row (the settings) when there is no other client at all.
QUERY = f"""\
WITH activity AS (
    SELECT * FROM pg_stat_activity
    WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()
), backends AS (
    SELECT coalesce(state, 'unknown') AS state,
           extract(epoch FROM clock_timestamp() - CASE
               WHEN state = 'idle in transaction (aborted)' THEN coalesce(xact_start, state_change)
               ELSE xact_start END)::float8 AS xact_age
    FROM activity
), by_state AS (
    SELECT state, count(*)::int AS n, greatest(coalesce(max(xact_age), 0), 0) AS oldest
    FROM backends GROUP BY state
), locks AS (
    SELECT count(*)::int AS waiting,
           greatest(coalesce(max(extract(epoch FROM clock_timestamp() - state_change)), 0), 0)
             ::float8 AS oldest
    FROM activity WHERE wait_event_type = 'Lock'
), stamped AS (
    SELECT coalesce(json_agg(json_build_object(
               'backend_pid', pid, 'application_name', application_name,
               'state', coalesce(state, 'unknown'),
               'waiting_on_lock', coalesce(wait_event_type = 'Lock', false),
               'blocked_by', pg_blocking_pids(pid),
               'transaction_seconds',
                 extract(epoch FROM clock_timestamp() - xact_start)::float8,
               'state_seconds',
                 extract(epoch FROM clock_timestamp() - state_change)::float8)), '[]')
             AS sessions
    FROM (SELECT * FROM activity WHERE application_name LIKE '{STAMP_PREFIX}%'
          ORDER BY pid LIMIT {MAX_SESSIONS}) AS mine
)
SELECT current_setting('max_connections')::int,
       current_setting('superuser_reserved_connections')::int
         + coalesce(nullif(current_setting('reserved_connections', true), '')::int, 0),
       by_state.state, by_state.n, by_state.oldest,
       locks.waiting, locks.oldest,
       (SELECT deadlocks FROM pg_stat_database WHERE datname = current_database())::int8,
       (SELECT setting::float8 / 1000 FROM pg_settings WHERE name = 'idle_session_timeout'),
       (SELECT setting::float8 / 1000 FROM pg_settings
        WHERE name = 'idle_in_transaction_session_timeout'),
       stamped.sessions
FROM (SELECT 1) AS one LEFT JOIN by_state ON true, locks, stamped"""


def connect_kwargs(url: str) -> dict[str, Any]:
    """psycopg2.connect() keyword arguments from a PostgreSQL URL or libpq DSN string."""
    target = probe_target(url)
    if target.backend != "postgresql":
        raise ValueError("not a PostgreSQL URL")
    if target.dsn is not None:
        return dict(target.dsn)
    kwargs: dict[str, Any] = dict(target.query)
    kwargs.update(target.given("dbname"))
    return kwargs


class DatabaseProbe(ServerProbe):
    """Periodic PostgreSQL probe serving the ``sqlalchemy_pool_db_*`` series."""

    STANDARD_STATES = STANDARD_STATES

    def __init__(
        self,
        url: str,
        interval: float = 15.0,
        statement_timeout: float = 2.0,
        *,
        connection_factory: Any = None,
    ) -> None:
        if not interval > 0 or not statement_timeout > 0:
            raise ValueError("interval and statement_timeout must be positive")
        kwargs = connect_kwargs(url)
        super().__init__(
            database=str(kwargs.get("dbname") or ""),
            target=_describe_target(kwargs),
            secret=str(kwargs.get("password") or "") or None,
            interval=interval,
        )
        self.statement_timeout = statement_timeout
        self._kwargs = _with_bounds(kwargs, statement_timeout)
        if connection_factory is not None:
            self._kwargs["connection_factory"] = connection_factory

    def _connect(self) -> Any:
        conn = psycopg2.connect(**self._kwargs)
        conn.autocommit = True  # no BEGIN: one round trip per probe
        return conn

    def _query(self, conn: Any) -> ProbeResult:
        with conn.cursor() as cur:
            cur.execute(QUERY)
            rows = cur.fetchall()
        return _parse(rows)

    def _dropped(self, conn: Any, exc: BaseException) -> bool:
        # psycopg2 marks a connection the server closed (restart, idle kill) as closed.
        return bool(conn.closed)

    def _join_timeout(self) -> float:
        return self.statement_timeout + 15


def _parse(rows: list[tuple[Any, ...]]) -> ProbeResult:
    if not rows:
        raise RuntimeError("probe query returned no row")
    connections: dict[str, int] = {}
    oldest: dict[str, float] = {}
    for row in rows:
        state, count, age = row[2:5]
        if state is not None:
            connections[str(state)] = int(count)
            oldest[str(state)] = float(age)
    first = rows[0]
    waiting, lock_age, deadlocks, idle_session, idle_xact, sessions = first[5:11]
    idle: dict[str, float] = {}
    if idle_session is not None:  # PostgreSQL 14+
        idle["idle_session"] = float(idle_session)
    if idle_xact is not None:
        idle["idle_in_transaction"] = float(idle_xact)
    return ProbeResult(
        int(first[0]),
        int(first[1]),
        connections,
        oldest,
        lock_waiting_connections=int(waiting or 0),
        oldest_lock_wait_seconds=float(lock_age or 0.0),
        deadlocks=None if deadlocks is None else int(deadlocks),
        idle_timeouts=idle,
        sessions=[_session(s) for s in sessions or []],
    )


def _session(raw: dict[str, Any]) -> dict[str, Any]:
    """One stamped server session, with the app process its application_name names."""
    out = dict(raw)
    out["owner"] = parse_stamp(str(raw.get("application_name") or ""))
    out["blocked_by"] = list(raw.get("blocked_by") or [])
    return out


def _with_bounds(kwargs: dict[str, Any], statement_timeout: float) -> dict[str, Any]:
    out = dict(kwargs)
    ms = max(1, int(statement_timeout * 1000))
    # Session settings travel in the startup packet: no SET round trip per connection.
    ours = f"-c statement_timeout={ms} -c default_transaction_read_only=on"
    out["options"] = f"{out['options']} {ours}" if out.get("options") else ours
    out.setdefault("application_name", "sqlalchemy-pool-exporter")
    # libpq treats connect_timeout below 2 s as 2 s.
    out.setdefault("connect_timeout", max(2, math.ceil(statement_timeout)))
    out.setdefault("keepalives", 1)
    out.setdefault("keepalives_idle", max(1, math.ceil(statement_timeout)))
    out.setdefault("keepalives_interval", 1)
    out.setdefault("keepalives_count", 3)
    return out


def _describe_target(kwargs: dict[str, Any]) -> str:
    host = kwargs.get("host") or "localhost"
    port = kwargs.get("port")
    where = f"{host}:{port}" if port else str(host)
    return f"postgresql://{where}/{kwargs.get('dbname') or ''}"
