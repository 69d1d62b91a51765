"""``fork()`` and pools: connections a child inherits, and parents that only fork.

**The hazard.** A pooled connection is an open socket to one database server backend.
``fork()`` copies it into the child, so when the parent (a gunicorn ``--preload`` master
that queried the database while loading the app) has connections in its pool, every
worker it forks starts with the very same sockets. Two processes then talk over one
socket, their protocol messages interleave, and requests fail (psycopg2:
``DatabaseError: error with status PGRES_TUPLES_OK``), get wrong rows, or kill the
worker. SQLAlchemy's fix is ``engine.dispose(close=False)`` in the child (gunicorn:
in ``post_fork``): the child gets a fresh pool and leaves the parent's sockets alone.

**Inherited connections.** Right after ``fork()``, the child puts a one-shot hook on
every connection record open in an instrumented engine's pool — idle in it, or checked
out by the parent — as the record's ``get_connection``, which SQLAlchemy calls on the
record at each checkout (see :mod:`~sqlalchemy_pool_exporter.instrumentation.compat`).
The first checkout of that record in the child runs the hook: it removes itself, lets
SQLAlchemy hand the connection out, and counts one in
``sqlalchemy_pool_fork_inherited_connections_total`` if the connection handed out is
still the one opened before the fork (a record that reconnects — recycled, invalidated —
hands out a connection of the child's own). The first one per pool and process is
logged as a warning that names the fix. So each inherited connection counts once,
however often it is checked out; the hooks hold no record alive; and a child that
disposed its inherited pool never checks one of those records out, so it counts
nothing. Every other checkout — in the parent, in a child that disposed, of any record
opened after the fork — runs SQLAlchemy's code untouched: the hot path gains nothing.
(Sampling checked-out connections from the monitor thread instead would miss most of
them: a request holds its connection for milliseconds, the monitor looks once a second.)

**Parents that only fork.** A process that has forked keeps its pool, but typically
only to hand it down: a gunicorn master or a Celery main process serves no requests.
Its ``pool_size`` and ``max_overflow`` are no capacity anyone can use, and summed at the
sidecar they would overstate what the app can open. So from a process's first fork on,
each of its pools reports its limits (``size``, ``max_overflow``, ``max_connections``)
as 0 until it checks a connection out of that pool again, or while it holds one: a
process that forks helpers but serves requests itself counts in full.
"""

from __future__ import annotations

import os
import weakref
from typing import Any

from sqlalchemy_pool_exporter.instrumentation import compat, registry
from sqlalchemy_pool_exporter.instrumentation.registry import Instrumentation
from sqlalchemy_pool_exporter.instrumentation.stats import PoolStats
from sqlalchemy_pool_exporter.logs import get_logger

log = get_logger(__name__)
#: The warning logged once per pool in a child that uses an inherited connection.
INHERITED_WARNING = (
    "pooled connection inherited across fork() is in use, sharing its socket with the"
    " parent process: call engine.dispose(close=False) in the child"
    " (e.g. in gunicorn's post_fork)"
)
#: Checkouts each pool had at this process's first fork; only a parent that forked has any.
_checkouts_at_fork: weakref.WeakKeyDictionary[Instrumentation, int] = weakref.WeakKeyDictionary()


class _InheritedPool:
    """One pool's inherited connections in a forked child: counted, warned about once."""

    def __init__(self, stats: PoolStats) -> None:
        self.stats = stats
        self.warned = False

    def used(self) -> None:
        """Count one inherited connection handed out in this process."""
        stats = self.stats
        with stats.lock:
            stats.fork_inherited_connections += 1
            first, self.warned = not self.warned, True
        if first:
            log.warning(INHERITED_WARNING, pool=stats.name, pid=os.getpid())


def _watch(record: Any, pool: _InheritedPool) -> None:
    """Count ``record``'s connection at its first checkout here, if still the inherited one."""
    ref = weakref.ref(record)  # the hook lives in the record: no cycle, nothing kept alive
    opened = compat.connection_opened_at(record)

    def get_connection() -> Any:
        rec = ref()  # alive: SQLAlchemy is calling this on it
        compat.unwatch_checkout(rec)  # later checkouts run SQLAlchemy's code alone
        connection = compat.record_connection(rec)
        try:
            if compat.connection_opened_at(rec) == opened:
                pool.used()
        except Exception as exc:  # never let bookkeeping reach the app
            registry.reporter.report("fork", exc)
        return connection

    compat.watch_checkout(record, get_connection)


def after_fork_child() -> None:
    """In a new child: watch every connection its pools inherited (before stats reset)."""
    _checkouts_at_fork.clear()  # the child has forked nothing
    for inst in registry.instrumentations():
        try:
            engine = inst.engine
            if engine is None:
                continue
            # Idle in the pool, or checked out by the parent (they come back to it).
            found = [*compat.pooled_records(engine.pool), *list(inst.stats.held)]
            records = {id(rec): rec for rec in found if rec.dbapi_connection is not None}
            pool = _InheritedPool(inst.stats)
            for rec in records.values():
                _watch(rec, pool)
        except Exception as exc:  # a failure here must not break fork() for the app
            registry.reporter.report("fork", exc)


def after_fork_parent() -> None:
    """In the parent after a fork: remember each pool's checkouts at its first fork."""
    try:  # runs under runtime's fork lock: forks of this process come one at a time
        for inst in registry.instrumentations():
            _checkouts_at_fork.setdefault(inst, inst.stats.checkouts)
    except Exception as exc:
        registry.reporter.report("fork", exc)


def lends_no_capacity(inst: Instrumentation, checked_out: int, checkouts: int) -> bool:
    """True while ``inst``'s pool belongs to a parent that forked and has not used it since."""
    at_fork = _checkouts_at_fork.get(inst)
    return at_fork is not None and checked_out == 0 and checkouts <= at_fork
