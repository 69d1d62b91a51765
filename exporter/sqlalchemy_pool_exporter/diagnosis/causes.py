"""One function per cause: what each way a pool runs dry looks like in the numbers.

Every function takes one pool, the server view and the thresholds (their shapes and the
helpers that read them: :mod:`~sqlalchemy_pool_exporter.diagnosis.inputs`), and returns
a :class:`Finding` or None. Server-wide causes (7, 9, and 3 for unattributed sessions)
are in :mod:`~sqlalchemy_pool_exporter.diagnosis.server`.
"""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy_pool_exporter.diagnosis.findings import Finding
from sqlalchemy_pool_exporter.diagnosis.inputs import (
    Pool,
    Server,
    Thresholds,
    checkout_sites,
    counter,
    gauge,
    pool_finding,
    setting_seconds,
)
from sqlalchemy_pool_exporter.protocol.catalog import INVALIDATION_KINDS


def never_closed(pool: Pool, server: Server, t: Thresholds) -> Finding | None:
    """1: connections held past the leak threshold, with the sites that took them."""
    leaked = int(gauge(pool, "leaked_connections"))
    if not leaked:
        return None
    sites = checkout_sites(pool, leaked_only=True)
    where = sites[0] if sites else "the checkout site"
    return pool_finding(
        pool,
        1,
        f"{leaked} connection(s) checked out longer than the leak threshold",
        f"close what you open: `with Session() as s:` / `with engine.connect() as conn:`"
        f" at {where}",
        leaked_connections=leaked,
        sites=sites,
        oldest_checkout_seconds=round(gauge(pool, "oldest_checkout_seconds"), 3),
    )


def too_small(pool: Pool, server: Server, t: Thresholds) -> Finding | None:
    """2: every connection in use and callers queueing, with nothing leaked."""
    if gauge(pool, "leaked_connections") or gauge(pool, "utilization_ratio") < 1:
        return None
    worst = max(
        pool.get("per_process") or [{"process": None, "gauges": pool["gauges"]}],
        key=lambda p: (p["gauges"].get("pending") or 0) + (p["gauges"].get("checked_out") or 0),
    )
    g = worst["gauges"]
    pending = int(g.get("pending") or 0)
    if not pending and not counter(pool, "checkout_timeouts"):
        return None
    demand = int(g.get("checked_out") or 0) + pending
    overflow = max(0, int(g.get("max_overflow") or 0))
    size = max(demand - overflow, int(g.get("size") or 0) + 1)
    return pool_finding(
        pool,
        2,
        f"all {int(g.get('checked_out') or 0)} connections of a process in use and"
        f" {pending} caller(s) waiting",
        f"pool_size={size} (the process's concurrency: {demand} callers at once), or fewer"
        " threads/workers per process",
        process=worst.get("process"),
        checked_out=int(g.get("checked_out") or 0),
        pending=pending,
        max_connections=g.get("max_connections"),
        checkout_timeouts_total=counter(pool, "checkout_timeouts"),
    )


def held_across_slow_calls(pool: Pool, server: Server, t: Thresholds) -> Finding | None:
    """3: this pool's connections sit idle in a transaction on the server."""
    sessions = [
        s
        for s in (server or {}).get("sessions", [])
        if s.get("pool") == pool.get("pool")
        and s.get("app") == pool.get("app")
        and str(s.get("server_state", "")).startswith("idle in transaction")
        and (s.get("state_seconds") or 0) >= t.idle_in_transaction_seconds
    ]
    if not sessions:
        return None
    worst = max(sessions, key=lambda s: s.get("state_seconds") or 0)
    return pool_finding(
        pool,
        3,
        f"{len(sessions)} connection(s) idle in a transaction for up to"
        f" {worst['state_seconds']:.0f}s",
        f"commit (or roll back) before slow calls at {worst.get('site') or 'the checkout site'}"
        " (process pid "
        f"{worst.get('pid')}); set idle_in_transaction_session_timeout as a backstop",
        sessions=[
            {k: s.get(k) for k in ("process", "pid", "backend_pid", "site", "state_seconds")}
            for s in sessions
        ],
    )


def error_path_leaks(pool: Pool, server: Server, t: Thresholds) -> Finding | None:
    """4: connections the garbage collector reclaimed: an exception skipped the close."""
    reclaimed = counter(pool, "gc_reclaimed")
    if not reclaimed:
        return None
    return pool_finding(
        pool,
        4,
        f"{reclaimed} connection(s) never returned and reclaimed by the garbage collector",
        "close in `finally:` or use `with engine.connect() as conn:` / `with Session() as s:`"
        " so an exception cannot skip it (the leak log names the site)",
        gc_reclaimed_total=reclaimed,
    )


def stale_connections(pool: Pool, server: Server, t: Thresholds) -> Finding | None:
    """5: pool_recycle at or above the server's idle limit, or dead connections reaching the app."""
    info = pool.get("info") or {}
    recycle = setting_seconds(info, "recycle_seconds")
    pre_ping = str(info.get("pre_ping", "")).lower() == "true"
    limits = (server or {}).get("sqlalchemy_pool_db_idle_timeout_seconds") or {}
    limit = min(
        (float(v) for k, v in limits.items() if k in ("idle_session", "wait") and float(v) > 0),
        default=0.0,
    )
    errors = sum(counter(pool, f"invalidations_{k}_error") for k in INVALIDATION_KINDS)
    pinged = sum(counter(pool, f"invalidations_{k}_pre_ping") for k in INVALIDATION_KINDS)
    risky = limit > 0 and (recycle < 0 or recycle >= limit)
    if not risky and not (errors and not pre_ping):
        return None
    fixes = []
    if risky:
        fixes.append(
            f"pool_recycle={int(limit * 5 / 6)} (below the server's {limit:g}s idle limit)"
        )
    if not pre_ping:
        fixes.append("pool_pre_ping=True")
    summary = (
        f"pool_recycle {'unset' if recycle < 0 else f'{recycle:g}s'} while the server closes"
        f" idle connections after {limit:g}s"
        if risky
        else f"{errors} disconnect error(s) reached the app"
    )
    return pool_finding(
        pool,
        5,
        summary,
        "; ".join(fixes),
        recycle_seconds=recycle,
        server_idle_limit_seconds=limit,
        pre_ping=pre_ping,
        invalidations_error=errors,
        invalidations_pre_ping=pinged,
    )


def overflow_too_low(pool: Pool, server: Server, t: Thresholds) -> Finding | None:
    """6: bursts hit the limit (peak at 100 %) while the pool is not saturated now."""
    timeouts = counter(pool, "checkout_timeouts")
    if (
        not timeouts
        or gauge(pool, "peak_utilization_ratio") < 1
        or gauge(pool, "utilization_ratio") >= 1
    ):
        return None
    size = int(gauge(pool, "size"))
    overflow = int(gauge(pool, "max_overflow"))
    return pool_finding(
        pool,
        6,
        f"bursts reached the limit ({timeouts} checkout timeout(s)) while usage now is"
        f" {gauge(pool, 'utilization_ratio'):.0%}",
        f"max_overflow={max(2 * overflow, overflow + size, 1)} (room for bursts; the pool"
        " keeps only pool_size open when quiet)",
        checkout_timeouts_total=timeouts,
        peak_utilization_ratio=gauge(pool, "peak_utilization_ratio"),
        utilization_ratio=gauge(pool, "utilization_ratio"),
        max_overflow=overflow,
    )


def null_pool(pool: Pool, server: Server, t: Thresholds) -> Finding | None:
    """8: a NullPool opens a new connection for every checkout."""
    info = pool.get("info") or {}
    if info.get("pool_class") != "NullPool" or not counter(pool, "checkouts"):
        return None
    return pool_finding(
        pool,
        8,
        f"NullPool: {counter(pool, 'connections_created')} connections opened for"
        f" {counter(pool, 'checkouts')} checkouts",
        "drop poolclass=NullPool (QueuePool is the default) unless a server-side pooler"
        " such as PgBouncer pools for you",
        pool_class="NullPool",
        checkouts_total=counter(pool, "checkouts"),
        connections_created_total=counter(pool, "connections_created"),
    )


def per_request_or_fork(pool: Pool, server: Server, t: Thresholds) -> Finding | None:
    """10: pools inherited across fork, or a fresh engine (and pool) for every request."""
    inherited = counter(pool, "fork_inherited_connections")
    if inherited:
        return pool_finding(
            pool,
            10,
            f"{inherited} pooled connection(s) inherited open across fork",
            "engine.dispose(close=False) in each child after fork (e.g. gunicorn post_fork,"
            " multiprocessing initializer)",
            fork_inherited_connections_total=inherited,
        )
    info = pool.get("info") or {}
    checkouts, created = counter(pool, "checkouts"), counter(pool, "connections_created")
    if info.get("pool_class") == "NullPool" or checkouts < t.churn_checkouts:
        return None
    if created < 0.9 * checkouts:
        return None
    return pool_finding(
        pool,
        10,
        f"{created} connections opened for {checkouts} checkouts: the pool is not reused",
        "create the engine once per process (module level), not per request; reuse it",
        checkouts_total=checkouts,
        connections_created_total=created,
    )


def waiting_now(pool: Pool, server: Server, t: Thresholds) -> Finding | None:
    """11: callers blocked inside pool.connect() right now, the oldest for a while."""
    pending = int(gauge(pool, "pending"))
    oldest = gauge(pool, "oldest_wait_seconds")
    if not pending or oldest < t.oldest_wait_seconds:
        return None
    sites = checkout_sites(pool)
    return pool_finding(
        pool,
        11,
        f"{pending} caller(s) waiting for a connection, the oldest for {oldest:.1f}s",
        "free the connections held at "
        + (", ".join(sites[:3]) if sites else "the checkout sites in /api/pools")
        + " sooner, or raise pool_size",
        pending=pending,
        oldest_wait_seconds=round(oldest, 3),
        holding_sites=sites[:5],
    )


def long_pool_timeout(pool: Pool, server: Server, t: Thresholds) -> Finding | None:
    """12: callers hang up to pool_timeout before failing (or give up before it)."""
    timeout = setting_seconds(pool.get("info") or {}, "timeout_seconds")
    if timeout < t.long_pool_timeout_seconds:
        return None
    timeouts = counter(pool, "checkout_timeouts")
    cancelled = counter(pool, "checkout_cancellations")
    oldest = gauge(pool, "oldest_wait_seconds")
    if not timeouts and not cancelled and not (oldest and oldest >= t.long_pool_timeout_seconds):
        return None
    return pool_finding(
        pool,
        12,
        f"pool_timeout={timeout:g}s: requests hang that long before failing",
        f"pool_timeout={max(1, int(t.long_pool_timeout_seconds / 2))} (fail fast, well below"
        " the request timeout) and fix what holds the connections",
        timeout_seconds=timeout,
        checkout_timeouts_total=timeouts,
        checkout_cancellations_total=cancelled,
        oldest_wait_seconds=round(oldest, 3),
    )


#: The per-pool causes, in the table's order.
POOL_CAUSES: tuple[Callable[[Pool, Server, Thresholds], Finding | None], ...] = (
    never_closed,
    too_small,
    held_across_slow_calls,
    error_path_leaks,
    stale_connections,
    overflow_too_low,
    null_pool,
    per_request_or_fork,
    waiting_now,
    long_pool_timeout,
)
