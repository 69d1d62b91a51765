"""The alerts on the pools' own series, and the one on those series going missing.

Near exhaustion, exhausted, checkout timeouts, slow checkouts, leaks, invalidations and
connect errors each read the recording rules of :mod:`rule_builder` (one series per
pool); the slow-checkout and invalidation alerts also need a minimum checkout rate, so an
idle pool cannot fire them on a handful of checkouts. ``SQLAlchemyPoolExporterDown`` fires
when the exporter is not scraped: without its series none of the others could fire.
"""

from __future__ import annotations

from typing import Any

# Loaded from generate.py, which puts this directory on sys.path.
from rule_builder import (  # type: ignore[import-not-found,unused-ignore]
    POOL_REF,
    RuleBuilder,
)


def pool_alerts(rules: RuleBuilder) -> list[dict[str, Any]]:
    """Alerts on the pools' own series: limits, waits, leaks, invalidations, connect errors."""
    a = rules.alerts_cfg
    peak = rules.gauge("sqlalchemy_pool_peak_utilization_ratio", "max")
    util = rules.gauge("sqlalchemy_pool_utilization_ratio", "max")
    pending = rules.gauge("sqlalchemy_pool_pending", "sum")
    leaked = rules.gauge("sqlalchemy_pool_leaked_connections", "sum")
    rules.gauge("sqlalchemy_pool_max_connections", "sum")
    timeouts = rules.rate(
        "sqlalchemy_pool_checkout_timeouts", a["SQLAlchemyPoolCheckoutTimeouts"]["window"]
    )
    connect_errors = rules.rate(
        "sqlalchemy_pool_connect_errors", a["SQLAlchemyPoolConnectErrors"]["window"]
    )
    slow = a["SQLAlchemyPoolSlowCheckout"]
    slow_checkouts = rules.rate("sqlalchemy_pool_checkouts", slow["window"])
    quantile = float(slow["quantile"])
    qname = "p" + f"{quantile * 100:g}".replace(".", "")
    wait_q = rules.record(
        f"app_pool:sqlalchemy_pool_wait_seconds:{qname}_rate{slow['window']}",
        f"histogram_quantile({quantile:g}, sum by ({rules.by}, le) "
        f"(rate({rules.sel('sqlalchemy_pool_wait_seconds_bucket')}[{slow['window']}])))",
    )
    inv = a["SQLAlchemyPoolHighInvalidationRate"]
    inv_checkouts = rules.rate("sqlalchemy_pool_checkouts", inv["window"])
    invalidations = rules.rate("sqlalchemy_pool_invalidations", inv["window"])
    inv_ratio = rules.record(
        f"app_pool:sqlalchemy_pool_invalidations_per_checkout:ratio_rate{inv['window']}",
        f"{invalidations}\n/\n{inv_checkouts}",
    )
    min_rate = f"{float(rules.cfg['min_checkouts_per_second']):g}"

    near = a["SQLAlchemyPoolNearExhaustion"]
    exhausted = a["SQLAlchemyPoolExhausted"]
    t = a["SQLAlchemyPoolCheckoutTimeouts"]
    leak = a["SQLAlchemyPoolConnectionLeak"]
    ce = a["SQLAlchemyPoolConnectErrors"]
    return [
        rules.alert(
            "SQLAlchemyPoolNearExhaustion",
            f"{peak} > {near['threshold']}",
            "SQLAlchemy pool is close to its connection limit.",
            f"{POOL_REF} peaked at {{{{ $value | humanizePercentage }}}} of its connection"
            f" limit (pool_size + max_overflow) throughout the last {near['for']}. A little"
            " more load and callers will wait for connections and time out.",
        ),
        rules.alert(
            "SQLAlchemyPoolExhausted",
            f"{util} >= 1\nand\n({pending} > 0 or {timeouts} > 0)",
            "SQLAlchemy pool has no free connection and callers are waiting.",
            f"Every connection of {POOL_REF} is checked out (utilization"
            " {{ $value | humanizePercentage }}) and callers have been waiting for one or"
            f" timing out for {exhausted['for']}. Requests that need the database stall"
            " for up to pool_timeout, then fail.",
        ),
        rules.alert(
            "SQLAlchemyPoolCheckoutTimeouts",
            f"{timeouts} > {t['threshold']}",
            "Checkouts from a SQLAlchemy pool are timing out.",
            f"{POOL_REF}: {{{{ printf \"%.2f\" $value }}}} checkouts per second have been"
            " failing with \"QueuePool limit ... reached, connection timed out\" for"
            f" {t['for']} (rate over {t['window']}). The app is returning these errors.",
        ),
        rules.alert(
            "SQLAlchemyPoolSlowCheckout",
            f"{wait_q} > {float(slow['threshold_seconds']):g}\nand\n"
            f"{slow_checkouts} > {min_rate}",
            "Getting a connection from a SQLAlchemy pool is slow.",
            f"{POOL_REF}: the {quantile * 100:g}th percentile of the time to get a"
            f" connection over the last {slow['window']} is"
            " {{ $value | humanizeDuration }} (threshold"
            f" {float(slow['threshold_seconds']) * 1000:g}ms), for {slow['for']}. Requests"
            " pay this before their first query.",
        ),
        rules.alert(
            "SQLAlchemyPoolConnectionLeak",
            f"{leaked} > {leak['threshold']}",
            "A SQLAlchemy pool has connections checked out for too long (leak suspected).",
            f"{POOL_REF}: {{{{ $value }}}} connection(s) checked out longer than the leak"
            f" threshold, for {leak['for']}. /api/pools on the sidecar and the"
            " app's log name the code that checked each one out.",
        ),
        rules.alert(
            "SQLAlchemyPoolHighInvalidationRate",
            f"{inv_ratio} > {inv['threshold']}\nand\n{inv_checkouts} > {min_rate}",
            "Many connections of a SQLAlchemy pool are being invalidated.",
            f"{POOL_REF}: invalidated connections (disconnects, failed pre-pings, explicit"
            " invalidation) amount to {{ $value | humanizePercentage }} of checkouts over"
            f" the last {inv['window']}, for {inv['for']}. Connections are dying under the"
            " app.",
        ),
        rules.alert(
            "SQLAlchemyPoolConnectErrors",
            f"{connect_errors} > {ce['threshold']}",
            "A SQLAlchemy pool cannot open database connections.",
            f"{POOL_REF}: {{{{ printf \"%.2f\" $value }}}} attempts per second to open a"
            f" database connection failed over the last {ce['window']}, and failures have"
            f" gone on for {ce['for']}.",
        ),
    ]


def exporter_down_alert(rules: RuleBuilder) -> dict[str, Any]:
    """The exporter is not scraped: without its series no other pool alert can fire."""
    d = rules.alerts_cfg["SQLAlchemyPoolExporterDown"]
    up = f"up{{{rules.cfg['exporter_selector']}}}"
    expr = f"{up} == 0" + (f"\nor\nabsent({up})" if d.get("alert_if_absent") else "")
    pools_query = (
        "group by (app, pool) (last_over_time(sqlalchemy_pool_info"
        "{instance=%q, job=%q}[1h]))"
    )
    description = (
        "{{ with $labels.instance }}Prometheus has failed to scrape the SQLAlchemy pool"
        f" exporter at {{{{ . }}}} (job {{{{ $labels.job }}}}) for {d['for']}"
        "{{ else }}Prometheus has had no target of the SQLAlchemy pool exporter"
        f" ({rules.cfg['exporter_selector']}) for {d['for']}{{{{ end }}}}:"
        " pool metrics are missing and no other pool alert can fire for them."
        f"{{{{ range $i, $p := printf `{pools_query}` $labels.instance $labels.job | query"
        ' | sortByLabel "app" | sortByLabel "pool" }}'
        "{{ if $i }},{{ else }} Pools it served:{{ end }}"
        " {{ $p.Labels.pool }}{{ with $p.Labels.app }} of app {{ . }}{{ end }}{{ end }}"
        "{{ with printf `" + pools_query + "` $labels.instance $labels.job | query }}."
        "{{ end }}"
    )
    return rules.alert(
        "SQLAlchemyPoolExporterDown",
        expr,
        "The SQLAlchemy pool exporter is not being scraped.",
        description,
    )
