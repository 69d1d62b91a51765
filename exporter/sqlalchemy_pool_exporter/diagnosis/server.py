"""Server-wide causes, and :func:`diagnose`, which runs every cause over every pool.

Lock waits (7) and the connection budget (9) belong to the server rather than to one
pool; an idle-in-transaction session nobody stamped (3) can only be reported from the
server's side, without a process or a site.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy_pool_exporter.diagnosis.causes import POOL_CAUSES
from sqlalchemy_pool_exporter.diagnosis.findings import Finding
from sqlalchemy_pool_exporter.diagnosis.inputs import Pool, Server, Thresholds


def lock_waits(server: Server, t: Thresholds) -> Finding | None:
    """7: sessions waiting for row locks, and who holds them."""
    if not server:
        return None
    waiting = int(server.get("sqlalchemy_pool_db_lock_waiting_connections") or 0)
    oldest = float(server.get("sqlalchemy_pool_db_oldest_lock_wait_seconds") or 0.0)
    if not waiting or oldest < t.lock_wait_seconds:
        return None
    sessions = server.get("sessions") or []
    blockers = [s for s in sessions if s.get("blocking")]
    blocked = [s for s in sessions if s.get("server_state") == "waiting on a lock"]
    holder = blockers[0] if blockers else {}
    where = (
        f"{holder.get('site') or 'a transaction'}"
        f" (app {holder.get('app')}, pid {holder.get('pid')})"
        if holder
        else "the blocking transaction (attribution names it: stamp_application_name=True)"
    )
    return Finding(
        7,
        f"{waiting} connection(s) waiting for a lock, the oldest for {oldest:.1f}s",
        f"shorten the transaction holding the lock at {where}; take row locks in one order;"
        " set lock_timeout so waiters fail instead of holding connections",
        {
            "lock_waiting_connections": waiting,
            "oldest_lock_wait_seconds": round(oldest, 3),
            "deadlocks_total": server.get("sqlalchemy_pool_db_deadlocks"),
            "blocking": [_who(s) for s in blockers],
            "blocked": [_who(s) for s in blocked],
        },
        app=holder.get("app"),
        pool=holder.get("pool"),
    )


def unattributed_idle_in_transaction(server: Server, t: Thresholds) -> Finding | None:
    """3, seen from the server only: a transaction left open by a session nobody stamped."""
    if not server:
        return None
    oldest = (server.get("sqlalchemy_pool_db_oldest_transaction_seconds") or {}).get(
        "idle in transaction", 0.0
    )
    stamped = [
        s
        for s in server.get("sessions") or []
        if str(s.get("server_state", "")).startswith("idle in transaction")
    ]
    if stamped or float(oldest) < t.idle_in_transaction_seconds:
        return None
    return Finding(
        3,
        f"a transaction has been idle for {float(oldest):.0f}s",
        "commit before slow calls; turn on attribution (stamp_application_name=True) to see"
        " which process and site hold it; set idle_in_transaction_session_timeout",
        {"oldest_idle_in_transaction_seconds": round(float(oldest), 3)},
    )


def connection_budget(pools: list[Pool], server: Server, t: Thresholds) -> Finding | None:
    """9: the pools' combined limits exceed what the server accepts."""
    if not server or server.get("sqlalchemy_pool_db_max_connections") is None:
        return None
    database = server.get("database")
    mine = [p for p in pools if not database or (p.get("info") or {}).get("database") == database]
    usable = int(server["sqlalchemy_pool_db_max_connections"]) - int(
        server.get("sqlalchemy_pool_db_reserved_connections") or 0
    )
    limits = [int(p["gauges"].get("max_connections") or 0) for p in mine]
    total = sum(limits)
    if total <= usable or not mine:
        return None
    return Finding(
        9,
        f"the pools may open {total} connections; the server accepts {usable}",
        f"lower pool_size/max_overflow so that their sum over every process stays within"
        f" {usable} (or raise max_connections, or put PgBouncer in front)",
        {
            "combined_max_connections": total,
            "server_usable_connections": usable,
            "pools": {
                f"{p.get('app')}/{p.get('pool')}": n for p, n in zip(mine, limits, strict=True)
            },
        },
    )


def _who(session: dict[str, Any]) -> dict[str, Any]:
    keys = ("app", "pid", "process", "pool", "site", "backend_pid", "blocked_by", "state_seconds")
    return {k: session.get(k) for k in keys}


def diagnose(
    pools: list[Pool], server: Server, thresholds: Thresholds | None = None
) -> list[Finding]:
    """Every finding for ``pools`` and the server view (None without a probe)."""
    t = thresholds or Thresholds()
    found: list[Finding] = []
    for pool in pools:
        for cause in POOL_CAUSES:
            finding = cause(pool, server, t)
            if finding is not None:
                found.append(finding)
    for server_cause in (lock_waits, unattributed_idle_in_transaction):
        finding = server_cause(server, t)
        if finding is not None:
            found.append(finding)
    budget = connection_budget(pools, server, t)
    if budget is not None:
        found.append(budget)
    return sorted(found, key=lambda f: (f.cause, f.app or "", f.pool or ""))
