"""The dashboard's last rows: what happens around the pool.

Churn (connections replaced), Leaks (connections never given back), Database server (the
server's own limit and backends) and Exporter health (is every process being seen). Each
function returns one row and its panels.
"""

from __future__ import annotations

from panels import (  # type: ignore[import-not-found,unused-ignore]
    BY,
    HOST,
    IDLE_TX_CRIT,
    IDLE_TX_WARN,
    LEGEND,
    UTIL_CRIT,
    UTIL_WARN,
    WAIT_CRIT,
    WAIT_WARN,
    Json,
    quantiles,
    rate,
    row,
    sel,
    stat,
    targets,
    thresholds,
    timeseries,
)


def churn() -> list[Json]:
    return row(
        "Churn",
        timeseries("Connections created / closed",
                   "New DBAPI connections opened and closed by the pool per second. Steady "
                   "churn with a QueuePool means overflow connections or pool_recycle; "
                   "every new connection costs a round trip and server memory.",
                   targets(
                       (f"sum by ({BY}) ({rate('sqlalchemy_pool_connections_created_total')})",
                        f"created {LEGEND}"),
                       (f"sum by ({BY}) ({rate('sqlalchemy_pool_connections_closed_total')})",
                        f"closed {LEGEND}"),
                   ),
                   "ops", thresholds()),
        timeseries("Invalidations by kind and cause",
                   "Connections invalidated per second: hard (closed) and soft (replaced at "
                   "next checkout), by cause: pre_ping (found dead at checkout and replaced, "
                   "the app saw nothing), error (a disconnect error reached the app), "
                   "explicit (the app called invalidate()). A burst usually means the "
                   "database restarted or a proxy dropped connections; steady errors mean "
                   "pool_recycle above an idle limit without pre-ping.",
                   targets((f"sum by ({BY}, kind, cause) "
                            f"({rate('sqlalchemy_pool_invalidations_total')})",
                            f"{{{{kind}}}} {{{{cause}}}} {LEGEND}")),
                   "ops", thresholds(None, 1)),
        timeseries("Connect errors",
                   "Failed attempts per second to open a DBAPI connection: the database "
                   "refuses or is unreachable (check its max_connections in the Database "
                   "server row).",
                   targets((f"sum by ({BY}) ({rate('sqlalchemy_pool_connect_errors_total')})",
                            LEGEND)),
                   "ops", thresholds(None, 1e-9)),
        quantiles("Connect time p50 / p95 / p99",
                  "Time to open a new DBAPI connection, per pool. Slow connects make every "
                  "overflow checkout slow.",
                  "sqlalchemy_pool_connect_seconds", WAIT_WARN, WAIT_CRIT),
    )


def leaks() -> list[Json]:
    return row(
        "Leaks",
        timeseries("Leaked connections",
                   "Connections checked out longer than the leak threshold right now, per "
                   "pool. The exporter logs each one with its checkout site; /api/pools on "
                   "the sidecar lists them.",
                   targets((f"sum by ({BY}) ({sel('sqlalchemy_pool_leaked_connections')})",
                            LEGEND)),
                   "short", thresholds(None, 1), threshold_lines=True, decimals=0),
        timeseries("Leaks and GC-reclaimed connections",
                   "Checkouts per second that crossed the leak threshold (each counted "
                   "once), and connections the app never returned that the garbage "
                   "collector reclaimed — both point at code that does not close its "
                   "session or connection.",
                   targets(
                       (f"sum by ({BY}) ({rate('sqlalchemy_pool_leaks_total')})",
                        f"leaks {LEGEND}"),
                       (f"sum by ({BY}) ({rate('sqlalchemy_pool_gc_reclaimed_total')})",
                        f"gc reclaimed {LEGEND}"),
                   ),
                   "ops", thresholds(None, 1e-9)),
    )


def database() -> list[Json]:
    # The probe labels its series with `database`; several sidecars probing one server
    # report the same numbers, hence max, not sum, on the server's side.
    def server(metric: str, by: str = "database", extra: str = "") -> str:
        return f"max by ({by}) ({sel(metric, HOST, extra)})"

    usable = (f"{server('sqlalchemy_pool_db_max_connections')} - "
              f"{server('sqlalchemy_pool_db_reserved_connections')}")
    combined = f"sum({sel('sqlalchemy_pool_max_connections')})"
    backends = server("sqlalchemy_pool_db_connections", "database, state")
    budget = (f"{combined} / (max({sel('sqlalchemy_pool_db_max_connections', HOST)}) - "
              f"max({sel('sqlalchemy_pool_db_reserved_connections', HOST)}))")
    return row(
        "Database server",
        stat("Connection budget used",
             "The selected pools' combined hard limits (all processes, all replicas) as a "
             "share of what the database server accepts: max_connections minus reserved "
             "slots. Above 100 % the apps can open more connections than the server allows "
             "and get connect errors at peak load. Select the apps of one server.",
             budget, "percentunit", thresholds(UTIL_WARN, UTIL_CRIT), w=6, h=8),
        timeseries("Server limit against the apps' combined pool limits",
                   "The server's max_connections minus reserved connections, against the "
                   "sum of every selected pool's limit (all processes, all replicas) and "
                   "the client backends the server has now. Needs the sidecar's database "
                   "probe (--database-url).",
                   targets(
                       (usable, "{{database}}: max_connections - reserved"),
                       (combined, "apps' combined pool limits"),
                       (f"sum by (database) ({backends})", "{{database}}: backends now"),
                   ),
                   "short", thresholds(), w=18, decimals=0),
        timeseries("Server backends by state",
                   "Client backends on the database server by pg_stat_activity.state, from "
                   "every app, not only the selected ones. Many 'idle in transaction' "
                   "backends are connections an app checked out, began a transaction on, "
                   "and is holding.",
                   targets((backends, "{{database}} {{state}}")),
                   "short", thresholds(), stack=True, decimals=0),
        timeseries("Oldest idle-in-transaction",
                   "Age of the oldest transaction whose session sits idle in transaction: "
                   "an app holding a connection mid-transaction (a leak) also holds locks "
                   "and blocks vacuum.",
                   targets((server("sqlalchemy_pool_db_oldest_transaction_seconds",
                                   extra='state="idle in transaction"'), "{{database}}")),
                   "s", thresholds(IDLE_TX_WARN, IDLE_TX_CRIT), threshold_lines=True),
        timeseries("Lock waits and deadlocks",
                   "Backends waiting for a lock now, the longest current lock wait (s), and "
                   "deadlocks per second on the probed database. Every waiter holds a pool "
                   "connection: `sqlalchemy-pool-exporter doctor` names the holder.",
                   targets(
                       (server("sqlalchemy_pool_db_lock_waiting_connections"),
                        "{{database}} waiting"),
                       (server("sqlalchemy_pool_db_oldest_lock_wait_seconds"),
                        "{{database}} oldest wait (s)"),
                       (f"max by (database) "
                        f"({rate('sqlalchemy_pool_db_deadlocks_total', HOST)})",
                        "{{database}} deadlocks/s"),
                   ),
                   "short", thresholds(None, 1)),
    )


def exporter_health() -> list[Json]:
    return row(
        "Exporter health",
        timeseries("Reporting processes",
                   "Processes pushing to the sidecar: per pool (sqlalchemy_pool_processes) "
                   "and in total (pool_exporter_processes). A drop without a deploy means "
                   "workers died or cannot reach the sidecar.",
                   targets(
                       (f"sum by ({BY}) ({sel('sqlalchemy_pool_processes')})",
                        f"processes {LEGEND}"),
                       (f"sum({sel('pool_exporter_processes', HOST)})", "all processes"),
                   ),
                   "short", thresholds(), decimals=0),
        timeseries("Pushes",
                   "Snapshots received from app processes per second, by result.",
                   targets((f"sum by (result) ({rate('pool_exporter_pushes_total', HOST)})",
                            "{{result}}")),
                   "reqps", thresholds()),
        timeseries("Rejected pushes by reason",
                   "Pushes the sidecar refused per second, by reason (bad JSON, schema "
                   "version, size or cardinality limits, stale sequence, token). Rejected "
                   "processes are invisible on this dashboard.",
                   targets((f"sum by (reason) "
                            f"({rate('pool_exporter_push_rejected_total', HOST)})",
                            "{{reason}}")),
                   "reqps", thresholds(None, 1e-9)),
        timeseries("Expired processes",
                   "Processes per second that stopped pushing for 3 push intervals without "
                   "a final push (killed, OOM, hung) and were expired; their counters are "
                   "kept in the retired totals.",
                   targets((f"sum({rate('pool_exporter_processes_expired_total', HOST)})",
                            "expired")),
                   "ops", thresholds(None, 1e-9)),
        collapsed=True,  # the exporter's own plumbing: opened when numbers look wrong
    )
