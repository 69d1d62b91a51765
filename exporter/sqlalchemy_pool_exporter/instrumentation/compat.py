"""SQLAlchemy's private names that the exporter relies on, all in one place.

No public API tells when a checkout ends, how long a caller waited, or what a pool's
``max_overflow`` is, so the acquire path wraps a few private pool methods and reads a
few private attributes. Every such name is listed here: :func:`problems` checks each
against the installed SQLAlchemy, and ``tests/unit/test_compat.py`` fails with the
name and what it is for when a release renames or removes one (so the fix is a change
here, not a hunt). Supported: SQLAlchemy 2.0 and 2.1.

The hot path reads three attributes directly (an accessor call would cost more than
the rest of the bookkeeping): ``_ConnectionFairy._connection_record``,
``_ConnectionFairy._counter`` and ``_ConnectionRecord.fairy_ref``; they are listed in
:data:`FAIRY_ATTRIBUTES` and :data:`RECORD_ATTRIBUTES` and checked like the others.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.pool import Pool, QueuePool, SingletonThreadPool, StaticPool
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


def _no_connection() -> Any:
    raise RuntimeError("compat checks never connect")


def problems() -> list[str]:
    """What the installed SQLAlchemy lacks of the above, one line per name."""
    found: list[str] = []

    def has_slot(cls: type, name: str) -> bool:
        slots = {n for klass in cls.__mro__ for n in getattr(klass, "__slots__", ())}
        return name in slots or hasattr(cls, name)

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
        if not has_slot(_ConnectionFairy, name):
            found.append(f"_ConnectionFairy.{name} is gone ({what})")
    for name, what in RECORD_ATTRIBUTES:
        if not has_slot(_ConnectionRecord, name):
            found.append(f"_ConnectionRecord.{name} is gone ({what})")
    return found
