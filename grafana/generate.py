#!/usr/bin/env python3
"""Generate the Grafana dashboard ``grafana/dashboards/sqlalchemy-pools.json``.

This script and its modules — ``panels.py`` (builders, selectors, thresholds),
``rows.py`` and ``causes.py`` (the rows) — are the single source of the dashboard; the
JSON is their output and is committed so users can import it without running anything
(a test fails when the two disagree: run ``python grafana/generate.py`` after editing).

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
label that is absent, so one dashboard serves both modes. Metric names: docs/metrics.md.
Only the standard library is used, so the generator runs anywhere Python does.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

# The generator is a script next to its modules, also loaded by path from the tests.
sys.path.insert(0, str(Path(__file__).resolve().parent))

from causes import (  # type: ignore[import-not-found,unused-ignore]
    churn,
    database,
    exporter_health,
    leaks,
)
from panels import (  # type: ignore[import-not-found,unused-ignore]
    DS,
    OUTPUT,
    UID,
    UTIL_WARN,
    WAIT_WARN,
    Json,
)
from rows import (  # type: ignore[import-not-found,unused-ignore]
    connections,
    holding,
    overview,
    waiting,
)

__all__ = ["UTIL_WARN", "WAIT_WARN", "dashboard", "main", "render"]


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
