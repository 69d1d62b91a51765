"""The alerts for causes the pool gauges alone do not show: the runbook's causes 3, 5, 7, 9, 10.

All but one read what the sidecars' database probes see: locks waited on (7) and
transactions left idle (3), per ``database_group_by``; ``pool_recycle`` at or above the
server's idle limit (5), per ``database``; the connection budget (9), per
``server_labels``. Connections inherited across fork (10) come from the pools' own counter.

The database connection budget compares, per database server (``server_labels``, by
default ``database``), the sum of every bounded pool's ``max_connections`` — joined to
the server through ``sqlalchemy_pool_info``'s label of that name — with what the server
accepts according to the sidecars' probes (``sqlalchemy_pool_db_max_connections`` minus
``sqlalchemy_pool_db_reserved_connections``, labelled ``database`` by the probe; several
sidecars probing one server report the same numbers, hence ``max``).
"""

from __future__ import annotations

from typing import Any

# Loaded from generate.py, which puts this directory on sys.path.
from rule_builder import (  # type: ignore[import-not-found,unused-ignore]
    INFO_LABELS,
    POOL_REF,
    RuleBuilder,
)

OLDEST_XACT = "sqlalchemy_pool_db_oldest_transaction_seconds"
IDLE_XACT = 'state="idle in transaction"'
HAS_DATABASE = 'database!=""'


def budget_alert(rules: RuleBuilder) -> dict[str, Any]:
    """9: the pools using one server may open more connections than it accepts."""
    b = rules.alerts_cfg["SQLAlchemyPoolDatabaseConnectionBudget"]
    server = list(b["server_labels"])
    # Server labels that only sqlalchemy_pool_info carries are copied onto each pool's
    # max_connections; the others (e.g. namespace) are on every series already.
    from_info = [label for label in server if label in INFO_LABELS]
    keep = ", ".join(label for label in INFO_LABELS if label not in from_info)
    on = ", ".join(server)
    copy = ", ".join(from_info)
    level = "_".join(server)
    info_sel = rules.sel("sqlalchemy_pool_info", ", ".join(f'{x}!=""' for x in from_info))
    limits = rules.sel("sqlalchemy_pool_max_connections")
    per_pool = (
        f"{limits}\n  * ignoring ({copy}) group_left ({copy})\n"
        f"  max without ({keep}) ({info_sel})"
        if from_info else limits
    )
    apps = rules.record(
        f"{level}:sqlalchemy_pool_max_connections:sum", f"sum by ({on}) (\n  {per_pool}\n)"
    )
    usable = rules.record(
        f"{level}:sqlalchemy_pool_db_usable_connections:max",
        f"max by ({on}) ({rules.sel('sqlalchemy_pool_db_max_connections')})\n-\n"
        f"max by ({on}) ({rules.sel('sqlalchemy_pool_db_reserved_connections')})",
    )
    ratio = float(b["threshold_ratio"])
    expr = f"{apps}\n> on ({on})\n{usable}" + (f" * {ratio:g}" if ratio != 1 else "")
    # Template queries: the server's usable connections and the pools that add up.
    matchers = ", ".join(f"{label}=%q" for label in server)
    args = " ".join(f"$labels.{label}" for label in server)
    server_ref = " ".join(f"{label} {{{{ $labels.{label} }}}}" for label in server)
    pools_query = (
        f"sum by ({rules.by}) ({limits}"
        f" * ignoring ({copy}) group_left ({copy})"
        f" max without ({keep}) ({rules.sel('sqlalchemy_pool_info', matchers)}))"
        if from_info
        else f"sum by ({rules.by}) ({rules.sel('sqlalchemy_pool_max_connections', matchers)})"
    )
    description = (
        f"The pools using {server_ref} may open up to {{{{ $value }}}} connections"
        " together (pool_size + max_overflow of every process), but the server accepts"
        f" {{{{ with printf `{usable}{{{matchers}}}` {args} | query }}}}"
        "{{ . | first | value }}{{ end }} (max_connections minus reserved connections)."
        " Pools:"
        f" {{{{ range $i, $p := printf `{pools_query}` {args} | query"
        ' | sortByLabel "app" | sortByLabel "pool" }}'
        "{{ if $i }}, {{ end }}{{ $p.Labels.pool }}{{ with $p.Labels.app }} of app {{ . }}"
        "{{ end }} ({{ $p.Value }}){{ end }}. When they are all busy at once, the server"
        " refuses new connections (\"too many clients already\")."
    )
    return rules.alert(
        "SQLAlchemyPoolDatabaseConnectionBudget",
        expr,
        "SQLAlchemy pools may open more connections than the database server accepts.",
        description,
    )


def diagnosis_alerts(rules: RuleBuilder) -> list[dict[str, Any]]:
    """Lock waits (7), stale pools (5), inheritance across fork (10), idle transactions (3)."""
    a = rules.alerts_cfg
    db_by = ", ".join(rules.cfg["database_group_by"])
    db_ref = (
        "database {{ $labels.database }}"
        "{{ with $labels.namespace }} in namespace {{ . }}{{ end }}"
    )
    locks = a["SQLAlchemyPoolLockWaits"]
    lock_wait = rules.record(
        "database:sqlalchemy_pool_db_oldest_lock_wait_seconds:max",
        f"max by ({db_by}) ({rules.sel('sqlalchemy_pool_db_oldest_lock_wait_seconds')})",
    )
    idle = a["SQLAlchemyPoolIdleInTransaction"]
    idle_xact = rules.record(
        "database:sqlalchemy_pool_db_oldest_idle_in_transaction_seconds:max",
        f"max by ({db_by}) ({rules.sel(OLDEST_XACT, IDLE_XACT)})",
    )
    fork = a["SQLAlchemyPoolForkInheritedConnections"]
    # A forked worker's own series (per-process output, or a new app's first scrape)
    # is born with its count: increase() cannot see that first step, so a series that
    # did not exist a window ago counts with its whole value.
    counter = rules.sel("sqlalchemy_pool_fork_inherited_connections_total")
    inherited = rules.record(
        f"app_pool:sqlalchemy_pool_fork_inherited_connections:increase{fork['window']}",
        f"sum by ({rules.by}) (\n  ({counter} unless {counter} offset {fork['window']})\n"
        f"  or\n  increase({counter}[{fork['window']}])\n)",
    )
    return [
        rules.alert(
            "SQLAlchemyPoolLockWaits",
            f"{lock_wait} > {float(locks['threshold_seconds']):g}",
            "Database sessions are waiting for locks held by other transactions.",
            f"On {db_ref} a session has been waiting for a lock for"
            " {{ $value | humanizeDuration }} (threshold"
            f" {float(locks['threshold_seconds']):g}s), for {locks['for']}. Each waiter holds"
            " a pool connection while it waits. `sqlalchemy-pool-exporter doctor` names the"
            " holding process and checkout site.",
        ),
        stale_alert(rules),
        rules.alert(
            "SQLAlchemyPoolForkInheritedConnections",
            f"{inherited} > {fork['threshold']}",
            "Forked processes inherited open pooled connections from their parent.",
            f"{POOL_REF}: {{{{ $value | humanize }}}} pooled connection(s) were inherited"
            f" open across fork within {fork['window']}. Parent and child share those"
            " sockets; call engine.dispose(close=False) in each child after fork.",
        ),
        rules.alert(
            "SQLAlchemyPoolIdleInTransaction",
            f"{idle_xact} > {float(idle['threshold_seconds']):g}",
            "A transaction has been left open, idle, by an app.",
            f"On {db_ref} a transaction has been idle for {{{{ $value | humanizeDuration }}}}"
            f" (threshold {float(idle['threshold_seconds']):g}s), for {idle['for']}. It holds"
            " a pool connection, its locks and its snapshot. /api/pools and"
            " `sqlalchemy-pool-exporter doctor` name the process and checkout site.",
        ),
    ]


def stale_alert(rules: RuleBuilder) -> dict[str, Any]:
    """5: a pool recycles its connections no sooner than the server closes idle ones."""
    s = rules.alerts_cfg["SQLAlchemyPoolStaleConnectionRisk"]
    kinds = "|".join(s["kinds"])
    keep = ", ".join(label for label in INFO_LABELS if label != "database")
    idle_kinds = f'kind=~"{kinds}"'
    limit = rules.record(
        "database:sqlalchemy_pool_db_idle_timeout_seconds:min",
        f"min by (database) ({rules.sel('sqlalchemy_pool_db_idle_timeout_seconds', idle_kinds)}"
        " > 0)",
    )
    # pool_recycle per pool with the database it uses (from sqlalchemy_pool_info); a
    # pool that never recycles has no recycle series: -1 stands in for it.
    info = f"max without ({keep}) ({rules.sel('sqlalchemy_pool_info', HAS_DATABASE)})"
    recycle = rules.sel("sqlalchemy_pool_recycle_seconds")
    never = rules.sel("sqlalchemy_pool_info", 'database!="", recycle_seconds="-1"')
    per_pool = rules.record(
        "app_pool:sqlalchemy_pool_recycle_seconds:max",
        f"max by ({rules.by}, database) (\n  {recycle}\n"
        f"  * ignoring (database) group_left (database)\n  {info}\n)\n"
        f"or\nmax by ({rules.by}, database) (-1 + 0 * {never})",
    )
    expr = (
        f"(\n  {per_pool} >= on (database) group_left {limit}\n)\nor\n"
        f"(\n  {per_pool} == -1\n  and on (database) {limit}\n)"
    )
    return rules.alert(
        "SQLAlchemyPoolStaleConnectionRisk",
        expr,
        "A SQLAlchemy pool keeps connections longer than the database lets them idle.",
        f"{POOL_REF}: pool_recycle is {{{{ if eq $value -1.0 }}}}unset{{{{ else }}}}"
        "{{ $value }}s{{ end }} but the server closes connections idle for"
        f" {{{{ with printf `{limit}{{database=%q}}` $labels.database | query }}}}"
        "{{ . | first | value }}{{ end }}s (database {{ $labels.database }}). Pooled"
        " connections die idle; set pool_recycle below that limit (and pool_pre_ping=True).",
    )
