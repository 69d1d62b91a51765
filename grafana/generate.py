#!/usr/bin/env python3
"""Generate the Grafana dashboard ``grafana/dashboards/sqlalchemy-pools.json``.

This file is the single source of the dashboard; the JSON next to it is its output and is
committed so users can import it without running anything (a test fails when the two
disagree: run ``python grafana/generate.py`` after editing this file).

The dashboard answers "why is my pool exhausted?" top-down. The *Overview* row says
whether any pool is in trouble right now (utilization, waiters, timeouts, leaks, firing
alerts) and which one; each row below it is one possible cause: too few connections
(*Connections*), slow acquisition (*Waiting*), connections held too long (*Holding*),
connections being replaced (*Churn*), connections never given back (*Leaks*), the
database server itself running out of backends (*Database server*), or the exporter not
seeing every process (*Exporter health*).

Series labels: everything served by the sidecar carries ``app`` and ``pool``; embedded
mode has ``pool`` only; Prometheus adds ``job`` and ``instance`` (and ``namespace`` on
Kubernetes). Every variable therefore has an "All" value of ``.*``, which also matches a
label that is absent, so one dashboard serves both modes. Metric names are SPEC §2's.
Only the standard library is used, so the generator runs anywhere Python does.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

Json = dict[str, Any]

OUTPUT = Path(__file__).resolve().parent / "dashboards" / "sqlalchemy-pools.json"
UID = "sqlalchemy-pools"
DS = {"type": "prometheus", "uid": "${datasource}"}

# Selectors: pool series carry every label; server-side (probe) and exporter-health series
# come from the sidecar process itself and carry no app/pool.
POOL = 'job=~"$job", namespace=~"$namespace", instance=~"$instance", app=~"$app", pool=~"$pool"'
HOST = 'job=~"$job", namespace=~"$namespace", instance=~"$instance"'
BY = "app, pool"  # the unit the dashboard reports on; sums across sidecar replicas
LEGEND = "{{app}} {{pool}}"
RATE = "$__rate_interval"

# Thresholds, in the metric's own unit. Where an alert rule exists the warning colour starts
# at its threshold (prometheus/config.yaml; a test keeps the two equal): near exhaustion
# at 85 % peak utilization, slow checkout at a p95 wait of 0.25 s. 100 % is the limit.
UTIL_WARN, UTIL_CRIT = 0.85, 1.0
WAIT_WARN, WAIT_CRIT = 0.25, 1.0
HOLD_WARN, HOLD_CRIT = 5.0, 30.0  # 30 s = the default leak threshold
IDLE_TX_WARN, IDLE_TX_CRIT = 60.0, 300.0


def sel(metric: str, scope: str = POOL, extra: str = "") -> str:
    """``metric{scope, extra}``."""
    return f"{metric}{{{scope}{', ' + extra if extra else ''}}}"


def rate(metric: str, scope: str = POOL, extra: str = "") -> str:
    return f"rate({sel(metric, scope, extra)}[{RATE}])"


def quantile(q: float, histogram: str, by: str = BY) -> str:
    return f"histogram_quantile({q}, sum by ({by}, le) ({rate(histogram + '_bucket')}))"


def target(expr: str, legend: str = LEGEND, ref: str = "A", **extra: Any) -> Json:
    return {"datasource": DS, "refId": ref, "expr": expr, "legendFormat": legend, **extra}


def targets(*pairs: tuple[str, str]) -> list[Json]:
    """Targets A, B, … from (expr, legend) pairs."""
    return [target(e, legend, chr(ord("A") + i)) for i, (e, legend) in enumerate(pairs)]


def steps(*pairs: tuple[float | None, str]) -> Json:
    return {
        "mode": "absolute",
        "steps": [{"color": color, "value": value} for value, color in pairs],
    }


def thresholds(warn: float | None = None, crit: float | None = None) -> Json:
    """green below ``warn``, orange from it, red from ``crit``."""
    pairs: list[tuple[float | None, str]] = [(None, "green")]
    if warn is not None:
        pairs.append((warn, "orange"))
    if crit is not None:
        pairs.append((crit, "red"))
    return steps(*pairs)


def panel(kind: str, title: str, description: str, tgts: list[Json], unit: str,
          limits: Json, w: int = 12, h: int = 8, options: Json | None = None,
          custom: Json | None = None, **defaults: Any) -> Json:
    """A panel; ``gridPos`` x/y and ``id`` are filled in by :func:`layout`."""
    return {
        "type": kind,
        "title": title,
        "description": description,
        "datasource": DS,
        "gridPos": {"h": h, "w": w, "x": 0, "y": 0},
        "targets": tgts,
        "fieldConfig": {
            "defaults": {
                "unit": unit,
                "thresholds": limits,
                "color": {"mode": "thresholds" if kind == "stat" else "palette-classic"},
                **({"custom": custom} if custom else {}),
                **defaults,
            },
            "overrides": [],
        },
        "options": options or {},
    }


def timeseries(title: str, description: str, tgts: list[Json], unit: str, limits: Json,
               w: int = 12, stack: bool = False, threshold_lines: bool = False,
               **defaults: Any) -> Json:
    custom = {
        "drawStyle": "line",
        "lineWidth": 1,
        "fillOpacity": 10,
        "showPoints": "never",
        "spanNulls": False,
        "stacking": {"mode": "normal" if stack else "none", "group": "A"},
        "thresholdsStyle": {"mode": "dashed" if threshold_lines else "off"},
    }
    options = {
        "legend": {"displayMode": "table", "placement": "bottom", "showLegend": True,
                   "calcs": ["lastNotNull", "max"]},
        "tooltip": {"mode": "multi", "sort": "desc"},
    }
    return panel("timeseries", title, description, tgts, unit, limits, w=w,
                 options=options, custom=custom, min=0, **defaults)


def stat(title: str, description: str, expr: str, unit: str, limits: Json,
         w: int = 4, h: int = 5) -> Json:
    options = {
        "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
        "colorMode": "background",
        "graphMode": "area",
        "justifyMode": "auto",
        "textMode": "value",
        "orientation": "auto",
        "wideLayout": True,
        "showPercentChange": False,
        "percentChangeColorMode": "standard",
    }
    return panel("stat", title, description, [target(expr, legend="")], unit, limits,
                 w=w, h=h, options=options)


def heatmap(title: str, description: str, histogram: str) -> Json:
    expr = f"sum by (le) ({rate(histogram + '_bucket')})"
    options = {
        "calculate": False,
        "cellGap": 1,
        "color": {"mode": "scheme", "scheme": "Oranges", "fill": "dark-orange",
                  "scale": "exponential", "exponent": 0.5, "steps": 64, "reverse": False},
        "showValue": "never",
        "yAxis": {"axisPlacement": "left", "unit": "s"},
        "rowsFrame": {"layout": "auto"},
        "tooltip": {"mode": "single", "yHistogram": True, "showColorScale": False},
        "legend": {"show": True},
        "cellValues": {"unit": "reqps"},
        "filterValues": {"le": 1e-9},
        "exemplars": {"color": "rgba(255,0,255,0.7)"},
    }
    tgts = [target(expr, legend="{{le}}", format="heatmap")]
    return panel("heatmap", title, description, tgts, "reqps", thresholds(), options=options)


def quantiles(title: str, description: str, histogram: str, warn: float,
              crit: float) -> Json:
    tgts = targets(*[(quantile(q, histogram), f"p{round(q * 100)} {LEGEND}")
                     for q in (0.5, 0.95, 0.99)])
    return timeseries(title, description, tgts, "s", thresholds(warn, crit),
                      threshold_lines=True)


def row(title: str, *panels: Json, collapsed: bool = False) -> list[Json]:
    header = {"type": "row", "title": title, "collapsed": collapsed, "id": 0,
              "gridPos": {"h": 1, "w": 24, "x": 0, "y": 0}, "panels": []}
    if collapsed:
        header["panels"] = list(panels)
        return [header]
    return [header, *panels]


TABLE_OPTIONS: Json = {"showHeader": True, "cellHeight": "sm", "frameIndex": 0}
TABLE_CELLS: Json = {"align": "auto", "cellOptions": {"type": "auto"}, "inspect": False}


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
        timeseries("Invalidations by kind",
                   "Connections invalidated per second: hard (closed — disconnects, "
                   "pre-ping failures, explicit invalidate) and soft (replaced at next "
                   "checkout). A burst usually means the database restarted or a proxy "
                   "dropped connections.",
                   targets((f"sum by ({BY}, kind) "
                            f"({rate('sqlalchemy_pool_invalidations_total')})",
                            f"{{{{kind}}}} {LEGEND}")),
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


def variable(name: str, label: str, query: str, description: str) -> Json:
    return {
        "type": "query",
        "name": name,
        "label": label,
        "description": description,
        "datasource": DS,
        "query": query,
        "refresh": 2,  # on time range change: new pods and pools appear
        "multi": True,
        "includeAll": True,
        "allValue": ".*",  # matches an absent label too (embedded mode has no app)
        "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
        "options": [],
        "sort": 1,
        "regex": "",
        "hide": 0,
    }


def templating() -> list[Json]:
    metric = "sqlalchemy_pool_connections"
    chain = ["job", "namespace", "instance", "app", "pool"]
    out: list[Json] = [{
        "type": "datasource",
        "name": "datasource",
        "label": "Data source",
        "query": "prometheus",
        "options": [],
        "refresh": 1,
        "regex": "",
        "hide": 0,
    }]
    for i, name in enumerate(chain):
        parents = ", ".join(f'{p}=~"${p}"' for p in chain[:i])
        out.append(variable(
            name, name, f"label_values({metric}{{{parents}}}, {name})",
            f"Value(s) of the {name} label; All also matches series without it.",
        ))
    return out


def layout(items: list[Json]) -> list[Json]:
    """Assign ids and grid positions: panels flow left to right, a row starts a new line.

    Panels of a collapsed row are placed as if the row were open, as Grafana expects.
    """
    next_id, x, y, line_h = 1, 0, 0, 0

    def place(p: Json) -> None:
        nonlocal next_id, x, y, line_h
        w, h = p["gridPos"]["w"], p["gridPos"]["h"]
        if p["type"] == "row" or x + w > 24:
            x, y, line_h = 0, y + line_h, 0
        p["id"] = next_id
        next_id += 1
        p["gridPos"].update({"x": x, "y": y})
        if p["type"] == "row":
            y += h
            for child in p["panels"]:
                place(child)
        else:
            x, line_h = x + w, max(line_h, h)

    for item in items:
        place(item)
    return items


def dashboard() -> Json:
    panels = layout([*overview(), *connections(), *waiting(), *holding(), *churn(),
                     *leaks(), *database(), *exporter_health()])
    return {
        "uid": UID,
        "title": "SQLAlchemy connection pools",
        "description": "Why is my pool exhausted? Pool utilization, waiters, timeouts, hold "
                       "times, leaks and the database server's connection budget, from "
                       "sqlalchemy-pool-exporter.",
        "tags": ["sqlalchemy", "database", "connection-pool", "sqlalchemy-pool-exporter"],
        "editable": True,
        "graphTooltip": 1,
        "refresh": "30s",
        "schemaVersion": 39,
        "time": {"from": "now-1h", "to": "now"},
        "timepicker": {},
        "timezone": "browser",
        "fiscalYearStartMonth": 0,
        "liveNow": False,
        "links": [],
        "version": 1,
        "annotations": {"list": [{
            "builtIn": 1,
            "datasource": {"type": "grafana", "uid": "-- Grafana --"},
            "enable": True,
            "hide": True,
            "iconColor": "rgba(0, 211, 255, 1)",
            "name": "Annotations & Alerts",
            "type": "dashboard",
        }]},
        "templating": {"list": templating()},
        "panels": panels,
    }


def render() -> str:
    """The dashboard as the committed JSON text."""
    return json.dumps(dashboard(), indent=2, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=OUTPUT,
                        help=f"where to write the JSON (default: {OUTPUT})")
    args = parser.parse_args(argv)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(render(), encoding="utf-8")
    print(f"wrote {args.output}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
