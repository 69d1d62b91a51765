"""SQLAlchemy's private names that the exporter relies on, all in one place.

The cause of an invalidation (pre-ping, an error the app received, the app's own call)
is not passed to the pool's ``invalidate`` event: it is told by which SQLAlchemy method
is on the stack when the event fires (:data:`INVALIDATION_SITES`).

No public API tells when a checkout ends, how long a caller waited, or what a pool's
``max_overflow`` is, so the acquire path wraps a few private pool methods and reads a
few private attributes. Every such name is listed here: :func:`problems` checks each
against the installed SQLAlchemy, and ``tests/unit/test_compat.py`` fails with the
name and what it is for when a release renames or removes one (so the fix is a change
here, not a hunt). Supported: SQLAlchemy 2.0 and 2.1.

After ``fork()`` the child watches the connection records it inherited (see
:mod:`~sqlalchemy_pool_exporter.instrumentation.forks`): it finds the idle ones inside the
pool (:func:`pooled_records`) and puts a one-shot ``get_connection`` on each record —
what ``_ConnectionRecord.checkout`` calls on the record at every checkout — with
:func:`watch_checkout`; :data:`FORK_RECORD_ATTRIBUTES` are checked like the others.

The hot path reads three attributes directly (an accessor call would cost more than
the rest of the bookkeeping): ``_ConnectionFairy._connection_record``,
``_ConnectionFairy._counter`` and ``_ConnectionRecord.fairy_ref``; they are listed in
:data:`FAIRY_ATTRIBUTES` and :data:`RECORD_ATTRIBUTES` and checked like the others.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Any

from sqlalchemy.engine import Connection
from sqlalchemy.pool import (
    AsyncAdaptedQueuePool,
    Pool,
    QueuePool,
    SingletonThreadPool,
    StaticPool,
)
from sqlalchemy.pool.base import _ConnectionFairy, _ConnectionRecord

#: Pool methods wrapped per pool object: (name, what the wrapper learns there).
WRAPPED_METHODS = (
    ("_do_return_conn", "every end of a checkout (checkin and detach)"),
    ("_return_conn", "checkin: forwards to _do_return_conn"),
    ("_invoke_creator", "opening a DBAPI connection: connect time and errors"),
)
DO_RETURN_CONN, RETURN_CONN, INVOKE_CREATOR = (name for name, _ in WRAPPED_METHODS)
#: What ``Pool.connect`` forwards to; called directly to save a frame per checkout.
fairy_checkout = _ConnectionFairy._checkout
#: Attributes of a checked-out proxy read on the hot path.
FAIRY_ATTRIBUTES = (
    ("_connection_record", "the record a checkout holds"),
    ("_counter", "re-entrant checkouts of SingletonThreadPool"),
)
#: Attributes of a connection record read on the hot path.
RECORD_ATTRIBUTES = (("fairy_ref", "a proxy the garbage collector reclaimed"),)
#: Attributes of a connection record used to watch it after fork (never on the hot path).
FORK_RECORD_ATTRIBUTES = (
    ("starttime", "when the record opened its connection: inherited or reopened"),
    ("__dict__", "an instance attribute shadowing get_connection on one record"),
)
GET_CONNECTION = "get_connection"


def _code(owner: Any, name: str) -> Any:
    """The code object of ``owner.name`` (a function or classmethod), or None if gone."""
    fn = vars(owner).get(name)
    fn = getattr(fn, "__func__", fn)
    return getattr(fn, "__code__", None)


#: Where an invalidation comes from, told by the frames on the stack when the pool's
#: ``invalidate`` event fires (never on the hot path): (owner, method, cause).
#: ``_ConnectionFairy._checkout`` invalidates a connection that pre-ping (or a checkout
#: listener) found dead, and replaces it before the app sees it; the
#: ``_handle_dbapi_exception`` pair invalidates on a disconnect error the app receives;
#: ``invalidate()`` of a Connection or of a pooled proxy is the app's own call.
INVALIDATION_SITES = (
    (_ConnectionFairy, "_checkout", "pre_ping"),
    (Connection, "_handle_dbapi_exception", "error"),
    (Connection, "_handle_dbapi_exception_noconnection", "error"),
    (Connection, "invalidate", "explicit"),
    (_ConnectionFairy, "invalidate", "explicit"),
)
#: code object -> cause, for the names above that exist in this SQLAlchemy.
INVALIDATION_CODES = {
    code: cause
    for owner, name, cause in INVALIDATION_SITES
    if (code := _code(owner, name)) is not None
}


def max_overflow(pool: QueuePool) -> int:
    """A QueuePool's configured ``max_overflow`` (no public accessor)."""
    return int(pool._max_overflow)


def recycle_seconds(pool: Pool) -> float:
    """``pool_recycle`` of any pool (-1: never)."""
    return float(pool._recycle)


def pre_ping(pool: Pool) -> bool:
    """Whether the pool pings connections at checkout."""
    return bool(pool._pre_ping)


def static_connection_open(pool: StaticPool) -> bool:
    """Whether a StaticPool has opened its one connection yet."""
    return "connection" in pool.__dict__


def singleton_connections(pool: SingletonThreadPool) -> int:
    """Connections a SingletonThreadPool holds, one per thread that used it."""
    return len(pool._all_conns)


def pooled_records(pool: Pool) -> list[Any]:
    """The connection records a pool keeps (idle ones; all of them for SingletonThreadPool)."""
    if isinstance(pool, QueuePool):
        queue: Any = pool._pool
        if isinstance(pool, AsyncAdaptedQueuePool):
            # An asyncio.Queue created on first use (none: nothing was ever pooled).
            inner = vars(queue).get("_queue")
            return [] if inner is None else list(inner._queue)
        return list(queue.queue)
    if isinstance(pool, SingletonThreadPool):
        return list(pool._all_conns)
    if isinstance(pool, StaticPool) and static_connection_open(pool):
        return [pool.__dict__["connection"]]
    return []


def connection_opened_at(record: Any) -> float:
    """When ``record`` opened its current DBAPI connection (renewed by every reconnect)."""
    return float(record.starttime)


def watch_checkout(record: Any, hook: Callable[[], Any]) -> None:
    """Make ``hook()`` hand out ``record``'s connection at its next checkout, in its place."""
    vars(record)[GET_CONNECTION] = hook


def unwatch_checkout(record: Any) -> None:
    """Let ``record``'s checkouts run SQLAlchemy's own ``get_connection`` again."""
    vars(record).pop(GET_CONNECTION, None)


def record_connection(record: Any) -> Any:
    """SQLAlchemy's ``get_connection`` of ``record``: its connection, reopened if stale."""
    return _ConnectionRecord.get_connection(record)


def _no_connection() -> Any:
    raise RuntimeError("compat checks never connect")


def _has_slot(cls: type, name: str) -> bool:
    slots = {n for klass in cls.__mro__ for n in getattr(klass, "__slots__", ())}
    return name in slots or hasattr(cls, name)


def problems() -> list[str]:
    """What the installed SQLAlchemy lacks of the above, one line per name."""
    found: list[str] = []

    probe = QueuePool(_no_connection, pool_size=1, max_overflow=2, recycle=5, pre_ping=True)
    # Looked up on a pool object: ``_invoke_creator`` is set per pool by Pool.__init__.
    for name, what in WRAPPED_METHODS:
        if not callable(getattr(probe, name, None)):
            found.append(f"Pool.{name} is gone ({what})")
    if not callable(getattr(_ConnectionFairy, "_checkout", None)):
        found.append("_ConnectionFairy._checkout is gone (what Pool.connect forwards to)")
    for name in ("_max_overflow", "_recycle", "_pre_ping"):
        if name not in vars(probe):
            found.append(f"QueuePool.{name} is gone (pool configuration)")
    if "_all_conns" not in vars(SingletonThreadPool(_no_connection)):
        found.append("SingletonThreadPool._all_conns is gone (its connection count)")
    for name, what in FAIRY_ATTRIBUTES:
        if not _has_slot(_ConnectionFairy, name):
            found.append(f"_ConnectionFairy.{name} is gone ({what})")
    for name, what in RECORD_ATTRIBUTES:
        if not _has_slot(_ConnectionRecord, name):
            found.append(f"_ConnectionRecord.{name} is gone ({what})")
    for owner, name, cause in INVALIDATION_SITES:
        if _code(owner, name) is None and not (owner is _ConnectionFairy and name == "_checkout"):
            # (_ConnectionFairy._checkout is reported once, above)
            found.append(f"{owner.__name__}.{name} is gone (invalidations with cause={cause})")
    found.extend(_fork_problems())
    return found


def _fork_problems() -> list[str]:
    found: list[str] = []
    checkout_code = vars(_ConnectionRecord)["checkout"].__func__.__code__
    if GET_CONNECTION not in checkout_code.co_names:
        found.append(
            "_ConnectionRecord.checkout no longer calls record.get_connection"
            " (counting inherited connections after fork)"
        )
    if not callable(getattr(_ConnectionRecord, GET_CONNECTION, None)):
        found.append("_ConnectionRecord.get_connection is gone (a record's connection)")
    for name, what in FORK_RECORD_ATTRIBUTES:
        if not _has_slot(_ConnectionRecord, name):
            found.append(f"_ConnectionRecord.{name} is gone ({what})")
    if not isinstance(getattr(vars(QueuePool(_no_connection)).get("_pool"), "queue", None), deque):
        found.append("QueuePool._pool.queue is gone (idle records after fork)")
    async_queue = vars(AsyncAdaptedQueuePool(_no_connection)).get("_pool")
    if "_queue" not in dir(type(async_queue)):
        found.append("AsyncAdaptedQueuePool._pool._queue is gone (idle records after fork)")
    return found
