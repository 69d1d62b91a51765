"""The dashboard's first rows: is any pool in trouble, and is it short, slow or stuck?

Overview, Connections, Waiting and Holding: what the pool itself is doing. Each function
returns one row and its panels; descriptions say what a panel means and what to do about
it, so the dashboard explains itself. The rows about causes around the pool — churn,
leaks, the database server, the exporter — are in :mod:`causes`.
"""

from __future__ import annotations

from panels import (  # type: ignore[import-not-found,unused-ignore]
    BY,
    HOLD_CRIT,
    HOLD_WARN,
    LEGEND,
    TABLE_CELLS,
    TABLE_OPTIONS,
    UTIL_CRIT,
    UTIL_WARN,
    WAIT_CRIT,
    WAIT_WARN,
    Json,
    heatmap,
    panel,
    quantile,
    quantiles,
    rate,
    row,
    sel,
    stat,
    target,
    targets,
    thresholds,
    timeseries,
)


def pools_table() -> Json:
    """One row per pool (per process with the sidecar's per-process output): where it hurts."""
    by = f"{BY}, process"  # `process` exists only with per-process output
    columns = [  # (header, expr, unit, thresholds)
        ("peak utilization", f"max by ({by}) ({sel('sqlalchemy_pool_peak_utilization_ratio')})",
         "percentunit", thresholds(UTIL_WARN, UTIL_CRIT)),
        ("pending", f"sum by ({by}) ({sel('sqlalchemy_pool_pending')})", "short",
         thresholds(None, 1)),
        ("timeouts/s", f"sum by ({by}) ({rate('sqlalchemy_pool_checkout_timeouts_total')})",
         "ops", thresholds(None, 1e-9)),
        ("leaked", f"sum by ({by}) ({sel('sqlalchemy_pool_leaked_connections')})", "short",
         thresholds(None, 1)),
        ("oldest checkout", f"max by ({by}) ({sel('sqlalchemy_pool_oldest_checkout_seconds')})",
         "s", thresholds(HOLD_WARN, HOLD_CRIT)),
        ("wait p99", quantile(0.99, "sqlalchemy_pool_wait_seconds", by), "s",
         thresholds(WAIT_WARN, WAIT_CRIT)),
    ]
    refs = [chr(ord("A") + i) for i in range(len(columns))]
    tgts = [target(expr, legend="", ref=ref, format="table", instant=True)
            for ref, (_, expr, _, _) in zip(refs, columns, strict=True)]
    overrides = [
        {"matcher": {"id": "byName", "options": header},
         "properties": [{"id": "unit", "value": unit}, {"id": "thresholds", "value": limits},
                        {"id": "custom.cellOptions", "value": {"type": "color-text"}}]}
        for header, _, unit, limits in columns
    ]
    table = panel(
        "table", "Pools at a glance",
        "Every selected pool now, worst peak utilization first: which app and pool (and, "
        "with the sidecar's per-process output, which process) is in trouble, and "
        "whether it is waiting (pending, timeouts, wait p99) or holding (leaked, oldest "
        "checkout). Blank utilization: an unbounded pool.",
        tgts, "short", thresholds(), h=8, custom=TABLE_CELLS,
        options={**TABLE_OPTIONS,
                 "sortBy": [{"displayName": "peak utilization", "desc": True}]},
    )
    table["fieldConfig"]["overrides"] = overrides
    table["transformations"] = [
        {"id": "merge", "options": {}},
        {"id": "organize", "options": {
            "excludeByName": {"Time": True},
            "renameByName": {f"Value #{ref}": header
                             for ref, (header, _, _, _) in zip(refs, columns, strict=True)},
        }},
    ]
    return table


def overview() -> list[Json]:
    alerts = ('ALERTS{alertname=~"SQLAlchemyPool.*", alertstate="firing", '
              'namespace=~"$namespace", app=~"$app", pool=~"$pool"}')
    return row(
        "Overview",
        stat("Peak utilization (worst pool)",
             "Highest share of a pool's limit (pool_size + max_overflow) checked out within "
             "the peak window, so spikes between scrapes show. 100 % means callers now wait "
             "for a connection and may time out.",
             f"max({sel('sqlalchemy_pool_peak_utilization_ratio')})", "percentunit",
             thresholds(UTIL_WARN, UTIL_CRIT)),
        stat("Pending waiters",
             "Callers blocked in the pool waiting for a connection right now, summed over "
             "the selected pools. Anything above 0 means the pool is exhausted.",
             f"sum({sel('sqlalchemy_pool_pending')})", "short", thresholds(None, 1)),
        stat("Checkout timeouts",
             "Checkouts per second that gave up with 'QueuePool limit ... reached, "
             "connection timed out' (sqlalchemy.exc.TimeoutError). Each one is a failed "
             "request in the app.",
             f"sum({rate('sqlalchemy_pool_checkout_timeouts_total')})", "ops",
             thresholds(None, 1e-9)),
        stat("Leaked connections",
             "Connections checked out longer than the leak threshold right now: code that "
             "forgot to close a session or connection. See the Leaks row and /api/pools "
             "for the checkout site.",
             f"sum({sel('sqlalchemy_pool_leaked_connections')})", "short",
             thresholds(None, 1)),
        panel("table", "Firing alerts",
              "SQLAlchemyPool* alerts firing now (needs the bundled alert rules loaded in "
              "Prometheus). Empty is good.",
              [target(f"sum by (alertname, severity, app, pool) ({alerts})", legend="",
                      format="table", instant=True)],
              "short", thresholds(None, 1), w=8, h=5, options=TABLE_OPTIONS, custom=TABLE_CELLS)
        | {"transformations": [{"id": "organize", "options": {
            "excludeByName": {"Time": True, "Value": True}}}]},
        timeseries("Utilization and peak utilization against the limit",
                   "Checked-out connections as a share of the pool's hard limit "
                   "(pool_size + max_overflow), per pool: 'now' is the scrape-time value, "
                   "'peak' the highest within the peak window. The dashed lines mark 85 % "
                   "(near exhaustion) and 100 % (the limit: further checkouts wait).",
                   targets(
                       (f"max by ({BY}) ({sel('sqlalchemy_pool_utilization_ratio')})",
                        f"now {LEGEND}"),
                       (f"max by ({BY}) ({sel('sqlalchemy_pool_peak_utilization_ratio')})",
                        f"peak {LEGEND}"),
                   ),
                   "percentunit", thresholds(UTIL_WARN, UTIL_CRIT),
                   threshold_lines=True, max=1),
        pools_table(),
    )


def connections() -> list[Json]:
    conns = "sqlalchemy_pool_connections"
    checked_out, idle = 'state="checked_out"', 'state="idle"'
    return row(
        "Connections",
        timeseries("Checked out / idle / limit",
                   "Connections in use and idle in the pool against its hard limit "
                   "(sqlalchemy_pool_max_connections = pool_size + max_overflow). Checked out "
                   "reaching the limit is exhaustion; a limit that is low for the load calls "
                   "for a bigger pool, a checked-out line that only grows calls for the "
                   "Holding and Leaks rows.",
                   targets(
                       (f"sum by ({BY}) ({sel(conns, extra=checked_out)})",
                        f"checked out {LEGEND}"),
                       (f"sum by ({BY}) ({sel(conns, extra=idle)})",
                        f"idle {LEGEND}"),
                       (f"sum by ({BY}) ({sel('sqlalchemy_pool_max_connections')})",
                        f"limit {LEGEND}"),
                   ),
                   "short", thresholds(), decimals=0),
        timeseries("Overflow connections",
                   "Connections open beyond pool_size (they are closed again when returned), "
                   "against max_overflow. Sustained overflow means pool_size is below the "
                   "steady load.",
                   targets(
                       (f"sum by ({BY}) ({sel('sqlalchemy_pool_overflow')})",
                        f"overflow {LEGEND}"),
                       (f"sum by ({BY}) ({sel('sqlalchemy_pool_max_overflow')})",
                        f"max_overflow {LEGEND}"),
                   ),
                   "short", thresholds(), decimals=0),
    )


def waiting() -> list[Json]:
    return row(
        "Waiting",
        heatmap("Checkout wait time (heatmap)",
                "Distribution of the time from asking the pool for a connection to getting "
                "one (successful checkouts: includes opening a new connection and pre-ping), "
                "all selected pools. A band moving up towards pool_timeout is exhaustion.",
                "sqlalchemy_pool_wait_seconds"),
        quantiles("Checkout wait time p50 / p95 / p99",
                  "Quantiles of the checkout wait per pool. Healthy pools hand out "
                  "connections in well under a millisecond; waits of seconds mean callers "
                  "queue for a connection.",
                  "sqlalchemy_pool_wait_seconds", WAIT_WARN, WAIT_CRIT),
        timeseries("Pending waiters",
                   "Callers blocked waiting for a connection, per pool. Non-zero while the "
                   "pool is exhausted; these calls time out after pool_timeout.",
                   targets((f"sum by ({BY}) ({sel('sqlalchemy_pool_pending')})", LEGEND)),
                   "short", thresholds(None, 1), threshold_lines=True, decimals=0),
        timeseries("Checkout timeouts",
                   "Checkouts per second that raised sqlalchemy.exc.TimeoutError (QueuePool "
                   "limit reached), per pool.",
                   targets((f"sum by ({BY}) ({rate('sqlalchemy_pool_checkout_timeouts_total')})",
                            LEGEND)),
                   "ops", thresholds(None, 1e-9)),
    )


def holding() -> list[Json]:
    return row(
        "Holding",
        heatmap("Connection use time (heatmap)",
                "Distribution of how long connections stay checked out (checkout to "
                "checkin), all selected pools. Long holds starve other callers: look for "
                "slow queries, external calls or sessions kept open across a request.",
                "sqlalchemy_pool_use_seconds"),
        quantiles("Connection use time p50 / p95 / p99",
                  "Quantiles of the time a connection stays checked out, per pool. Pool "
                  "capacity is roughly pool size / hold time checkouts per second.",
                  "sqlalchemy_pool_use_seconds", HOLD_WARN, HOLD_CRIT),
        timeseries("Oldest checkout",
                   "Age of the longest-held checked-out connection, per pool (worst "
                   "process). A line that climbs steadily is a connection that is never "
                   "returned; the dashed red line is the default leak threshold.",
                   targets((f"max by ({BY}) "
                            f"({sel('sqlalchemy_pool_oldest_checkout_seconds')})", LEGEND)),
                   "s", thresholds(HOLD_WARN, HOLD_CRIT), w=24, threshold_lines=True),
    )
