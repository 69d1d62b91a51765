"""Building blocks of the dashboard: selectors, PromQL helpers, panels and rows.

Every panel of ``grafana/dashboards/sqlalchemy-pools.json`` is made by one of these
builders, so units, thresholds, legends and the datasource are set the same way
everywhere. The thresholds where an alert exists equal the alert's (a test checks).
"""

from __future__ import annotations

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


