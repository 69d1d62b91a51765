"""What every database probe shares: its result, the password redaction, the probe loop.

A probe asks its server, from a background thread every ``interval`` seconds, one short
set of read-only queries on one kept-open session and keeps the answer as a
:class:`ProbeResult` keyed by catalog name. Scrapes never touch the database:
:meth:`ServerProbe.collect` serves the last result, and after a failed probe only
``sqlalchemy_pool_db_up 0`` (stale numbers would look current). A kept session the
server dropped (restart, idle kill) is reconnected and the query retried once at once,
so a restart alone does not report the server down.

Nothing here imports a database driver: a backend module (``probes.mysql``) subclasses
:class:`ServerProbe` with its connect and query, and imports its driver itself.
"""

from __future__ import annotations

import contextlib
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from prometheus_client.core import Metric
from prometheus_client.registry import Collector

from sqlalchemy_pool_exporter.exposition import family
from sqlalchemy_pool_exporter.logs import get_logger
from sqlalchemy_pool_exporter.protocol.catalog import metric

log = get_logger(__name__)

# (pattern, replacement): drivers may echo a DSN or URL in error text.
_SECRET_PATTERNS = (
    (re.compile(r"(password\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)", re.IGNORECASE), r"\1***"),
    (re.compile(r"(://[^:/@\s]*:)[^@\s]*(@)"), r"\1***\2"),
)


def redact(text: str, secret: str | None) -> str:
    """``text`` with ``secret`` and anything that looks like a password replaced."""
    if secret:
        text = text.replace(secret, "***")
    for pattern, replacement in _SECRET_PATTERNS:
        text = pattern.sub(replacement, text)
    return text


@dataclass(frozen=True)
class ProbeResult:
    """One successful probe: server limits, sessions by state, locks, idle limits.

    None (or an absent key) is "this server or role does not tell": the series is not
    served rather than served as 0.
    """

    max_connections: int
    reserved_connections: int
    connections: dict[str, int] = field(default_factory=dict)
    #: None when the role cannot see transactions (MySQL without PROCESS)
    oldest_transaction_seconds: dict[str, float] | None = field(default_factory=dict)
    lock_waiting_connections: int | None = 0
    oldest_lock_wait_seconds: float | None = 0.0
    deadlocks: int | None = None
    #: ``sqlalchemy_pool_db_idle_timeout_seconds`` by kind (0 = none; absent if unknown)
    idle_timeouts: dict[str, float] = field(default_factory=dict)
    aborted_clients: int | None = None
    #: server sessions of stamped app connections (see ``probes.stamp``)
    sessions: list[dict[str, Any]] = field(default_factory=list)

    def values(self) -> dict[str, Any]:
        """The result keyed by catalog name (label value -> value where it has a label)."""
        oldest = self.oldest_transaction_seconds
        return {
            "sqlalchemy_pool_db_up": 1,
            "sqlalchemy_pool_db_max_connections": self.max_connections,
            "sqlalchemy_pool_db_reserved_connections": self.reserved_connections,
            "sqlalchemy_pool_db_connections": dict(self.connections),
            "sqlalchemy_pool_db_oldest_transaction_seconds": oldest and dict(oldest),
            "sqlalchemy_pool_db_lock_waiting_connections": self.lock_waiting_connections,
            "sqlalchemy_pool_db_oldest_lock_wait_seconds": self.oldest_lock_wait_seconds,
            "sqlalchemy_pool_db_deadlocks": self.deadlocks,
            "sqlalchemy_pool_db_idle_timeout_seconds": dict(self.idle_timeouts),
            "sqlalchemy_pool_db_aborted_clients": self.aborted_clients,
        }


#: Scalar series of a result, served when not None.
_SCALARS = (
    ("sqlalchemy_pool_db_max_connections", "max_connections"),
    ("sqlalchemy_pool_db_reserved_connections", "reserved_connections"),
    ("sqlalchemy_pool_db_lock_waiting_connections", "lock_waiting_connections"),
    ("sqlalchemy_pool_db_oldest_lock_wait_seconds", "oldest_lock_wait_seconds"),
    ("sqlalchemy_pool_db_deadlocks", "deadlocks"),
    ("sqlalchemy_pool_db_aborted_clients", "aborted_clients"),
)


class ServerProbe(Collector):
    """The probe loop and exposition; a backend supplies ``_connect``, ``_query``, ``_dropped``."""

    #: States always exported (0 when absent), so dashboard series do not come and go.
    STANDARD_STATES: tuple[str, ...] = ("active", "idle", "idle in transaction")

    def __init__(self, *, database: str, target: str, secret: str | None, interval: float):
        self.database = database
        self.target = target
        self.interval = interval
        self._secret = secret
        self._conn: Any = None
        self._lock = threading.Lock()
        # The last probe's result; None until the first success and after a failure.
        self._result: ProbeResult | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.probes = 0
        self.failures = 0
        self.last_error: str | None = None

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.target!r}, interval={self.interval})"

    # -- what a backend provides -----------------------------------------------------

    def _connect(self) -> Any:
        """A new session, set up read-only and bounded."""
        raise NotImplementedError

    def _query(self, conn: Any) -> ProbeResult:
        """One probe on ``conn``."""
        raise NotImplementedError

    def _dropped(self, conn: Any, exc: BaseException) -> bool:
        """True if ``conn`` failed with ``exc`` because the server had closed it."""
        raise NotImplementedError

    def _join_timeout(self) -> float:
        return 15.0

    # -- probing -------------------------------------------------------------------

    def probe_once(self) -> bool:
        """Probe the server now; True on success. Never raises for database errors."""
        with self._lock:
            self.probes += 1
            reused = self._conn is not None
            try:
                result = self._run_query()
            except Exception as exc:
                # A kept connection the server dropped says nothing about the server now:
                # reconnect and try once more. A slow or failing query is a real failure.
                dropped = reused and self._conn is not None and self._dropped(self._conn, exc)
                self._close()
                if not dropped:
                    return self._failed(exc)
                try:
                    result = self._run_query()
                except Exception as retry_exc:
                    self._close()
                    return self._failed(retry_exc)
            if self._result is None and self.failures:
                log.info("database probe recovered", target=self.target)
            self._result, self.last_error = result, None
            return True

    def _run_query(self) -> ProbeResult:
        if self._conn is None:
            self._conn = self._connect()
        return self._query(self._conn)

    def _failed(self, exc: BaseException) -> bool:
        self.failures += 1
        error = redact(f"{type(exc).__name__}: {str(exc).strip()}", self._secret)
        if self._result is not None or self.failures == 1:
            log.warning("database probe failed", target=self.target, error=error)
        else:
            log.debug("database probe failed", target=self.target, error=error)
        self._result, self.last_error = None, error
        return False

    def _close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            # closing a broken connection may fail; it is gone anyway
            with contextlib.suppress(Exception):
                conn.close()

    # -- background thread ---------------------------------------------------------

    def start(self) -> None:
        """Probe now and then every ``interval`` seconds in a daemon thread."""
        if self._thread is not None and self._thread.is_alive():
            return
        self._stop.clear()
        self._thread = threading.Thread(
            target=self._run, name="pool-exporter-db-probe", daemon=True
        )
        self._thread.start()

    def _run(self) -> None:
        while True:
            try:
                self.probe_once()
            except Exception as exc:  # the thread must outlive any surprise
                log.error("database probe error", error=redact(repr(exc), self._secret))
            if self._stop.wait(self.interval):
                return

    def stop(self, timeout: float | None = None) -> None:
        """Stop the thread and close the connection."""
        self._stop.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout if timeout is not None else self._join_timeout())
        self._thread = None
        with self._lock:
            self._close()

    # -- exposition ----------------------------------------------------------------

    def collect(self) -> Iterator[Metric]:
        """The ``sqlalchemy_pool_db_*`` families from the last probe (no database access)."""
        labels = ("database",)
        db = [self.database]
        result = self._result  # one read: a probe finishing meanwhile cannot mix results
        up = family(metric("sqlalchemy_pool_db_up"), labels)
        up.add_metric(db, 1.0 if result is not None else 0.0)
        yield up
        if result is None:
            return
        for name, attr in _SCALARS:
            value = getattr(result, attr)
            if value is not None:
                one = family(metric(name), labels)
                one.add_metric(db, value)
                yield one
        states = sorted(set(self.STANDARD_STATES) | set(result.connections))
        conns = family(metric("sqlalchemy_pool_db_connections"), labels)
        for state in states:
            conns.add_metric([*db, state], result.connections.get(state, 0))
        yield conns
        if result.oldest_transaction_seconds is not None:
            oldest = family(metric("sqlalchemy_pool_db_oldest_transaction_seconds"), labels)
            for state in states:
                oldest.add_metric([*db, state], result.oldest_transaction_seconds.get(state, 0.0))
            yield oldest
        idle = family(metric("sqlalchemy_pool_db_idle_timeout_seconds"), labels)
        for kind, seconds in sorted(result.idle_timeouts.items()):
            idle.add_metric([*db, kind], seconds)
        yield idle

    def last_result(self) -> ProbeResult | None:
        """The last successful probe's result (None before one, and after a failure)."""
        return self._result
