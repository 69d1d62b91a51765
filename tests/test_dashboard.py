"""The Grafana dashboard: up to date, schema-valid, and every query sound.

``grafana/generate.py`` is the single source of ``grafana/dashboards/sqlalchemy-pools.json``.
These tests check, without a Grafana or a Prometheus server:

* the committed JSON is exactly what the generator writes now;
* it type-checks against Grafana's published schema (``@grafana/schema``'s ``Dashboard``,
  compiled by TypeScript in ``grafana/schema-check``: structure and exact keys of the
  imported JSON, its enum values as an object literal, and each panel's options against
  its panel plugin's schema) — and that check rejects broken dashboards, so it cannot
  pass vacuously;
* every panel query (and every variable's ``label_values`` selector), with the dashboard
  variables substituted as Grafana would, parses with ``promtool``;
* every metric a query reads is one the project exports (collected from the exporter's own
  collectors, not from a hand-written list), and every family the issue asks for is shown;
* every panel has a description, a unit and thresholds; ids and the grid are consistent.

The end-to-end proof that each query returns data is tests/integration/test_dashboard_e2e.py.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

from sqlalchemy_pool_exporter.exposition import pool_families
from sqlalchemy_pool_exporter.instrumentation.embedded import PoolCollector
from sqlalchemy_pool_exporter.probes.postgres import DatabaseProbe, ProbeResult
from sqlalchemy_pool_exporter.sidecar.aggregator import Aggregator
from sqlalchemy_pool_exporter.sidecar.collector import PushCounters, SidecarCollector
from tests.conftest import load_script, require_binary

ROOT = Path(__file__).resolve().parents[1]
GRAFANA = ROOT / "grafana"
DASHBOARD = GRAFANA / "dashboards" / "sqlalchemy-pools.json"
SCHEMA_CHECK = GRAFANA / "schema-check"

#: What Grafana puts in place of each variable when "All" is selected, and of its
#: interval macros. The e2e test substitutes the same way.
ALL = ".*"
MACROS = {"$__rate_interval": "1m", "$__interval": "15s", "$__range": "1h"}
VARIABLES = ("job", "namespace", "instance", "app", "pool")

PROMQL_FUNCTIONS = {"rate", "sum", "max", "min", "count", "histogram_quantile", "avg"}
PROMQL_KEYWORDS = {
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "bool",
    "and",
    "or",
    "unless",
    "offset",
}
ROWS = [
    "Overview",
    "Connections",
    "Waiting",
    "Holding",
    "Churn",
    "Leaks",
    "Database server",
    "Exporter health",
]


def load_generator() -> ModuleType:
    """grafana/generate.py as a module (it is a script, not part of the package)."""
    return load_script(GRAFANA / "generate.py", "grafana_generate")


def dashboard() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    return data


def all_panels(dash: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel, rows and the panels inside collapsed rows included."""
    for panel in dash["panels"]:
        yield panel
        yield from panel.get("panels", [])


def queries(dash: dict[str, Any]) -> list[tuple[str, str]]:
    """(where, expr) of every panel target."""
    return [
        (f"{panel['title']} [{target['refId']}]", target["expr"])
        for panel in all_panels(dash)
        if panel["type"] != "row"
        for target in panel["targets"]
    ]


def variable_selectors(dash: dict[str, Any]) -> list[tuple[str, str]]:
    """(variable, series selector) of every ``label_values(selector, label)`` query."""
    out = []
    for var in dash["templating"]["list"]:
        if var["type"] != "query":
            continue
        match = re.fullmatch(r"label_values\((.+), (\w+)\)", var["query"])
        assert match, f"variable {var['name']}: unexpected query {var['query']!r}"
        assert match.group(2) == var["name"]
        out.append((f"variable {var['name']}", match.group(1)))
    return out


def substitute(expr: str) -> str:
    """``expr`` as Grafana sends it with every variable on "All"."""
    for macro, value in MACROS.items():
        expr = expr.replace(macro, value)
    for name in VARIABLES:
        expr = expr.replace(f"${name}", ALL)
    assert "$" not in expr, f"unsubstituted variable in {expr!r}"
    return expr


_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')
_IDENT = re.compile(r"(?<![\w.])[a-zA-Z_:][a-zA-Z0-9_:]*")


def metric_names(expr: str) -> set[str]:
    """Metric names an expression reads (selectors with or without braces)."""
    text = _STRING.sub('""', expr)
    names = set(re.findall(r"([a-zA-Z_:][a-zA-Z0-9_:]*)\s*\{", text))
    text = re.sub(r"\{[^}]*\}", " ", text)
    text = re.sub(r"\[[^\]]*\]", " ", text)
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    for match in _IDENT.finditer(text):
        word = match.group()
        if text[match.end() :].lstrip().startswith("("):
            assert word in PROMQL_FUNCTIONS, f"unexpected function {word!r} in {expr!r}"
        elif word not in PROMQL_KEYWORDS:
            names.add(word)  # a bare metric name
    return names


def sample_names(families: Any) -> set[str]:
    """Sample names Prometheus sees for prometheus_client families, samples or not."""
    suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_sum", "_count"], "gauge": [""]}
    return {f.name + suffix for f in families for suffix in suffixes[f.type]}


def exported_metric_names(monkeypatch: pytest.MonkeyPatch) -> set[str]:
    """Every series name the exporter can serve, from its real collectors."""
    names = sample_names(pool_families(("app", "pool"), []))
    names |= sample_names(PoolCollector().collect())
    names |= sample_names(SidecarCollector(Aggregator(), PushCounters()).collect())
    # The probe serves its server-side families only after a successful probe; stand in
    # for the database round trip (tests/integration cover the real server).
    probe = DatabaseProbe("postgresql://monitor@127.0.0.1:1/app")
    result = ProbeResult(
        100, 3, {"idle in transaction": 1}, {"idle in transaction": 2.0}, deadlocks=0
    )
    monkeypatch.setattr(probe, "_run_query", lambda: result)
    assert probe.probe_once()
    names |= sample_names(probe.collect())
    return names


# -- up to date ---------------------------------------------------------------------------


def test_committed_dashboard_is_what_the_generator_writes(tmp_path: Path) -> None:
    out = tmp_path / "dashboard.json"
    subprocess.run(
        [sys.executable, str(GRAFANA / "generate.py"), "--output", str(out)],
        check=True,
        capture_output=True,
        timeout=60,
    )
    assert out.read_text(encoding="utf-8") == DASHBOARD.read_text(encoding="utf-8"), (
        "grafana/dashboards/sqlalchemy-pools.json is stale: run python grafana/generate.py"
    )


# -- Grafana's schema -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def schema_check() -> Path:
    """grafana/schema-check with its locked node modules installed (npm ci)."""
    require_binary("node")
    npm = require_binary("npm")
    result = subprocess.run(
        [npm, "ci", "--prefer-offline", "--no-audit", "--no-fund"],
        cwd=SCHEMA_CHECK,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, f"npm ci failed:\n{result.stdout}\n{result.stderr}"
    return SCHEMA_CHECK


def npm_check(project: Path) -> subprocess.CompletedProcess[str]:
    """``npm run check``: the literal check is written, then ``tsc --noEmit`` compiles."""
    return subprocess.run(
        [require_binary("npm"), "run", "--silent", "check"],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_dashboard_type_checks_against_grafana_schema(schema_check: Path) -> None:
    result = npm_check(schema_check)
    assert result.returncode == 0, f"tsc:\n{result.stdout}\n{result.stderr}"
    assert result.stdout == ""
    # The whole dashboard, and options and custom field config of each panel.
    panels = [p for p in all_panels(dashboard()) if p["type"] != "row"]
    literals = (schema_check / "generated" / "literals.ts").read_text()
    assert literals.count(" satisfies Literal<") == 1 + 2 * len(panels)


def _mutate(mutation: str, dash: dict[str, Any]) -> None:
    panel = dash["panels"][1]

    def first(kind: str) -> dict[str, Any]:
        return next(p for p in all_panels(dash) if p["type"] == kind)

    if mutation == "misspelled panel key":
        panel["gridpos"] = panel.pop("gridPos")
    elif mutation == "unknown field config key":
        panel["fieldConfig"]["defaults"]["units"] = "s"
    elif mutation == "grid height as text":
        panel["gridPos"]["h"] = "8"
    elif mutation == "no schemaVersion":
        del dash["schemaVersion"]
    elif mutation == "unknown key on a row":
        dash["panels"][0]["bogus"] = 1
    elif mutation == "threshold as text":
        panel["fieldConfig"]["defaults"]["thresholds"]["steps"][1]["value"] = "0.8"
    elif mutation == "panel without type":
        del panel["type"]
    elif mutation == "unknown variable key":
        dash["templating"]["list"][1]["definition"] = "label_values(up, job)"
    elif mutation == "unknown colour mode":
        panel["fieldConfig"]["defaults"]["color"]["mode"] = "palette-clasic"
    elif mutation == "unknown threshold mode":
        panel["fieldConfig"]["defaults"]["thresholds"]["mode"] = "absolut"
    elif mutation == "row of another type":
        dash["panels"][0]["type"] = "rows"
    elif mutation == "unknown variable type":
        dash["templating"]["list"][1]["type"] = "querry"
    elif mutation == "unknown heatmap option":
        first("heatmap")["options"]["colour"] = {"mode": "scheme"}
    elif mutation == "unknown draw style":
        first("timeseries")["fieldConfig"]["defaults"]["custom"]["drawStyle"] = "lines"
    elif mutation == "stat without required option":
        del first("stat")["options"]["colorMode"]
    elif mutation == "panel type without a schema":
        first("timeseries")["type"] = "piechart"
    else:  # pragma: no cover
        raise AssertionError(mutation)


def check_copy(
    schema_check: Path, workdir: Path, dash: dict[str, Any]
) -> subprocess.CompletedProcess[str]:
    """``npm run check`` on a copy of grafana/ whose dashboard is ``dash``."""
    # Same layout as grafana/: the check reads ../dashboards/sqlalchemy-pools.json.
    project = workdir / "schema-check"
    project.mkdir()
    for name in ("package.json", "tsconfig.json", "schema.ts", "check.ts", "literal-check.mjs"):
        shutil.copy(schema_check / name, project / name)
    (project / "node_modules").symlink_to(schema_check / "node_modules")
    (workdir / "dashboards").mkdir()
    (workdir / "dashboards" / DASHBOARD.name).write_text(json.dumps(dash))
    return npm_check(project)


def test_schema_check_copy_accepts_the_dashboard(schema_check: Path, tmp_path: Path) -> None:
    # The control for the next test: the copy itself works.
    result = check_copy(schema_check, tmp_path, dashboard())
    assert (result.returncode, result.stdout) == (0, "")


@pytest.mark.parametrize(
    "mutation",
    [
        "misspelled panel key",
        "unknown field config key",
        "grid height as text",
        "no schemaVersion",
        "unknown key on a row",
        "threshold as text",
        "panel without type",
        "unknown variable key",
        "unknown colour mode",
        "unknown threshold mode",
        "row of another type",
        "unknown variable type",
        "unknown heatmap option",
        "unknown draw style",
        "stat without required option",
        "panel type without a schema",
    ],
)
def test_schema_check_rejects_a_broken_dashboard(
    schema_check: Path, tmp_path: Path, mutation: str
) -> None:
    dash = dashboard()
    _mutate(mutation, dash)
    result = check_copy(schema_check, tmp_path, dash)
    assert result.returncode != 0
    assert "error TS" in result.stdout


# -- queries ------------------------------------------------------------------------------


def promtool_check(tmp_path: Path, exprs: list[str]) -> subprocess.CompletedProcess[str]:
    """``promtool check rules`` on one recording rule per expression."""
    rules = {
        "groups": [
            {
                "name": "dashboard",
                "rules": [
                    {"record": f"dashboard:query_{i}", "expr": expr} for i, expr in enumerate(exprs)
                ],
            }
        ]
    }
    path = tmp_path / "dashboard-queries.rules.yml"
    path.write_text(json.dumps(rules, indent=1))  # JSON is YAML
    return subprocess.run(
        [require_binary("promtool"), "check", "rules", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_every_query_parses_with_promtool(tmp_path: Path) -> None:
    dash = dashboard()
    exprs = [substitute(e) for _, e in queries(dash) + variable_selectors(dash)]
    assert len(exprs) == len(queries(dash)) + 5
    result = promtool_check(tmp_path, exprs)
    assert result.returncode == 0, f"{result.stdout}\n{result.stderr}"
    assert f"SUCCESS: {len(exprs)} rules found" in result.stdout


def test_promtool_check_rejects_a_broken_query(tmp_path: Path) -> None:
    result = promtool_check(tmp_path, ["sum by (pool) (rate(sqlalchemy_pool_leaks_total[1m])"])
    assert result.returncode != 0
    assert "parse error" in result.stdout + result.stderr


def test_queries_read_only_metrics_the_project_exports(monkeypatch: pytest.MonkeyPatch) -> None:
    exported = exported_metric_names(monkeypatch)
    dash = dashboard()
    used: dict[str, set[str]] = {}
    for where, expr in queries(dash) + variable_selectors(dash):
        for name in metric_names(expr):
            used.setdefault(name, set()).add(where)
    # ALERTS is Prometheus's own series of active alerts; the panel reads only ours.
    assert 'ALERTS{alertname=~"SQLAlchemyPool.*"' in json.dumps(dash).replace('\\"', '"')
    unknown = {
        name: where for name, where in used.items() if name not in exported and name != "ALERTS"
    }
    assert unknown == {}


def test_metric_name_extraction() -> None:
    assert metric_names(
        "histogram_quantile(0.99, sum by (app, pool, le) "
        '(rate(sqlalchemy_pool_wait_seconds_bucket{pool=~"a{b}"}[1m])))'
    ) == {"sqlalchemy_pool_wait_seconds_bucket"}
    assert metric_names("sum(up) / on() group_left max(bogus_metric)") == {"up", "bogus_metric"}


def test_dashboard_shows_every_family_the_issue_asks_for() -> None:
    used = set().union(*(metric_names(e) for _, e in queries(dashboard())))
    assert used == {
        "ALERTS",
        "sqlalchemy_pool_utilization_ratio",
        "sqlalchemy_pool_peak_utilization_ratio",
        "sqlalchemy_pool_pending",
        "sqlalchemy_pool_checkout_timeouts_total",
        "sqlalchemy_pool_leaked_connections",
        "sqlalchemy_pool_connections",
        "sqlalchemy_pool_max_connections",
        "sqlalchemy_pool_overflow",
        "sqlalchemy_pool_max_overflow",
        "sqlalchemy_pool_wait_seconds_bucket",
        "sqlalchemy_pool_use_seconds_bucket",
        "sqlalchemy_pool_connect_seconds_bucket",
        "sqlalchemy_pool_oldest_checkout_seconds",
        "sqlalchemy_pool_connections_created_total",
        "sqlalchemy_pool_connections_closed_total",
        "sqlalchemy_pool_invalidations_total",
        "sqlalchemy_pool_connect_errors_total",
        "sqlalchemy_pool_leaks_total",
        "sqlalchemy_pool_gc_reclaimed_total",
        "sqlalchemy_pool_db_max_connections",
        "sqlalchemy_pool_db_reserved_connections",
        "sqlalchemy_pool_db_connections",
        "sqlalchemy_pool_db_oldest_transaction_seconds",
        "sqlalchemy_pool_db_lock_waiting_connections",
        "sqlalchemy_pool_db_oldest_lock_wait_seconds",
        "sqlalchemy_pool_db_deadlocks_total",
        "sqlalchemy_pool_processes",
        "pool_exporter_processes",
        "pool_exporter_pushes_total",
        "pool_exporter_push_rejected_total",
        "pool_exporter_processes_expired_total",
    }


# -- panels, variables, layout ------------------------------------------------------------


def test_rows_in_order() -> None:
    assert [p["title"] for p in dashboard()["panels"] if p["type"] == "row"] == ROWS


def test_every_panel_has_description_unit_thresholds_and_the_datasource_variable() -> None:
    panels = [p for p in all_panels(dashboard()) if p["type"] != "row"]
    assert len(panels) == 31
    for panel in panels:
        defaults = panel["fieldConfig"]["defaults"]
        assert len(panel["description"]) > 40, panel["title"]
        assert defaults["unit"] in {"percentunit", "s", "short", "ops", "reqps"}, panel["title"]
        assert defaults["thresholds"]["steps"][0] == {"color": "green", "value": None}
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        assert all(t["datasource"] == panel["datasource"] for t in panel["targets"])


def test_ids_unique_and_grid_within_24_columns() -> None:
    everything = list(all_panels(dashboard()))
    assert sorted(p["id"] for p in everything) == list(range(1, len(everything) + 1))
    for p in everything:
        assert p["gridPos"]["x"] + p["gridPos"]["w"] <= 24


def test_variables_are_chained_multi_select_with_an_all_that_matches_absent_labels() -> None:
    variables = dashboard()["templating"]["list"]
    assert [v["name"] for v in variables] == ["datasource", *VARIABLES]
    assert variables[0]["type"] == "datasource" and variables[0]["query"] == "prometheus"
    for i, var in enumerate(variables[1:]):
        assert (var["multi"], var["includeAll"], var["allValue"]) == (True, True, ".*")
        parents = ", ".join(f'{p}=~"${p}"' for p in VARIABLES[:i])
        selector = f"sqlalchemy_pool_connections{{{parents}}}"
        assert var["query"] == f"label_values({selector}, {var['name']})"


def test_pool_queries_tolerate_series_without_app() -> None:
    # Embedded mode has no app label: every pool selector must match it with =~ (All = .*).
    for where, expr in queries(dashboard()):
        assert 'app="' not in expr and "app!=" not in expr, where
        if "sqlalchemy_pool_" in expr and "_db_" not in expr:
            assert 'app=~"$app"' in expr and 'pool=~"$pool"' in expr, where


def test_thresholds_match_the_alert_rules() -> None:
    generator = load_generator()
    alerts = yaml.safe_load((ROOT / "prometheus" / "config.yaml").read_text())["alerts"]
    near_exhaustion = alerts["SQLAlchemyPoolNearExhaustion"]["threshold"]
    slow_checkout = alerts["SQLAlchemyPoolSlowCheckout"]["threshold_seconds"]
    assert (near_exhaustion, slow_checkout) == (generator.UTIL_WARN, generator.WAIT_WARN)


def test_provisioning_loads_the_dashboards_dir_with_a_prometheus_datasource() -> None:
    provisioning = GRAFANA / "provisioning"
    datasources = yaml.safe_load((provisioning / "datasources" / "prometheus.yaml").read_text())
    providers = yaml.safe_load(
        (provisioning / "dashboards" / "sqlalchemy-pool-exporter.yaml").read_text()
    )
    assert datasources["apiVersion"] == providers["apiVersion"] == 1
    [source] = datasources["datasources"]
    # The dashboard's datasource variable lists data sources of this type.
    assert source["type"] == dashboard()["templating"]["list"][0]["query"] == "prometheus"
    assert source["isDefault"] is True
    [provider] = providers["providers"]
    assert provider["type"] == "file"
    # Where the compose stack mounts grafana/dashboards.
    assert provider["options"]["path"] == "/var/lib/grafana/dashboards"
