"""The shipped Prometheus rules: promtool-clean, unit-tested, generated, in sync.

* ``promtool check rules`` accepts both rule files;
* ``promtool test rules`` passes every file under prometheus/tests/ (which assert exact
  labels and annotations, for cases that must fire and cases that must not);
* the committed outputs of prometheus/generate.py equal a fresh generation from
  prometheus/config.yaml, and the PrometheusRule carries exactly the same groups;
* the alert names and severities are fixed (docs/runbook.md), every alert has
  the three annotations, and every runbook_url anchor exists in docs/runbook.md.

promtool comes from the Debian ``prometheus`` package; :func:`require_binary` fails in CI
when it is missing.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

from tests.conftest import load_script, require_binary

ROOT = Path(__file__).resolve().parents[1]
RULES = ROOT / "prometheus"
ALERTS = RULES / "alerts.yaml"
RECORDING = RULES / "recording.yaml"
PROMETHEUSRULE = ROOT / "deploy" / "kubernetes" / "prometheusrule.yaml"
RUNBOOK = ROOT / "docs" / "runbook.md"
UNIT_TESTS = sorted((RULES / "tests").glob("*.yaml"))

#: The fixed alert names and their severities (docs/runbook.md).
SPEC_ALERTS = {
    "SQLAlchemyPoolNearExhaustion": "warning",
    "SQLAlchemyPoolExhausted": "critical",
    "SQLAlchemyPoolCheckoutTimeouts": "critical",
    "SQLAlchemyPoolSlowCheckout": "warning",
    "SQLAlchemyPoolConnectionLeak": "warning",
    "SQLAlchemyPoolHighInvalidationRate": "warning",
    "SQLAlchemyPoolConnectErrors": "critical",
    "SQLAlchemyPoolDatabaseConnectionBudget": "warning",
    "SQLAlchemyPoolExporterDown": "warning",
    "SQLAlchemyPoolLockWaits": "warning",
    "SQLAlchemyPoolStaleConnectionRisk": "warning",
    "SQLAlchemyPoolForkInheritedConnections": "warning",
    "SQLAlchemyPoolIdleInTransaction": "warning",
}
#: alerts about one pool: their descriptions must name the pool and the app
POOL_ALERTS = set(SPEC_ALERTS) - {
    "SQLAlchemyPoolDatabaseConnectionBudget",
    "SQLAlchemyPoolExporterDown",
    "SQLAlchemyPoolLockWaits",
    "SQLAlchemyPoolIdleInTransaction",
}


def load(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def alert_rules() -> list[dict[str, Any]]:
    return [r for g in load(ALERTS)["groups"] for r in g["rules"]]


def generator() -> ModuleType:
    return load_script(RULES / "generate.py", "rules_generate")


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, timeout=120, cwd=ROOT)


def test_promtool_check_rules() -> None:
    promtool = require_binary("promtool")
    result = run(promtool, "check", "rules", str(RECORDING), str(ALERTS))
    assert result.returncode == 0, result.stdout + result.stderr
    # alerts.yaml: one per SPEC alert
    assert f"SUCCESS: {len(SPEC_ALERTS)} rules found" in result.stdout
    assert result.stdout.count("SUCCESS") == 2


def test_promtool_unit_tests_pass() -> None:
    promtool = require_binary("promtool")
    assert len(UNIT_TESTS) >= len(SPEC_ALERTS)
    result = run(promtool, "test", "rules", *map(str, UNIT_TESTS))
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("SUCCESS") == len(UNIT_TESTS), result.stdout


def test_every_alert_has_cases_that_fire_and_cases_that_must_not() -> None:
    fires: dict[str, int] = dict.fromkeys(SPEC_ALERTS, 0)
    silent: dict[str, int] = dict.fromkeys(SPEC_ALERTS, 0)
    gen = generator()
    for path in UNIT_TESTS:
        doc = load(path)
        assert doc["rule_files"] == ["../recording.yaml", "../alerts.yaml"], path
        # promtool orders groups at random unless told: alerts could run a step late.
        assert doc["group_eval_order"] == [gen.RECORDING_GROUP, gen.ALERT_GROUP], path
        for case in doc["tests"]:
            for check in case.get("alert_rule_test", []):
                name = check["alertname"]
                expected = check.get("exp_alerts") or []
                if expected:
                    fires[name] += 1
                    for alert in expected:
                        # exact labels and every annotation, always
                        assert alert["exp_labels"]["severity"] == SPEC_ALERTS[name]
                        assert set(alert["exp_annotations"]) == {
                            "summary",
                            "description",
                            "runbook_url",
                        }, (path.name, case["name"])
                else:
                    silent[name] += 1
    assert all(fires.values()), fires
    assert all(silent.values()), silent


def test_alert_names_severities_and_annotations() -> None:
    rules = alert_rules()
    assert {r["alert"]: r["labels"]["severity"] for r in rules} == SPEC_ALERTS
    anchors = {m.group(1).lower() for m in re.finditer(r"^## (\w+)\s*$", RUNBOOK.read_text(), re.M)}
    config = load(RULES / "config.yaml")
    for rule in rules:
        name = rule["alert"]
        annotations = rule["annotations"]
        assert set(annotations) == {"summary", "description", "runbook_url"}, name
        assert annotations["runbook_url"] == f"{config['runbook_url']}#{name.lower()}"
        assert name.lower() in anchors, f"docs/runbook.md has no section for {name}"
        assert rule["labels"] == {"severity": SPEC_ALERTS[name]}
        description = annotations["description"]
        if name in POOL_ALERTS:
            for needed in ("$labels.pool", "$labels.app", "$value"):
                assert needed in description, (name, needed)
            assert config["alerts"][name]["for"] == rule["for"]


def test_generated_files_are_up_to_date(tmp_path: Path) -> None:
    gen = generator()
    assert gen.main(["--out", str(tmp_path)]) == 0
    outputs = [RECORDING, ALERTS, PROMETHEUSRULE]
    for committed in outputs:
        relative = committed.relative_to(ROOT)
        fresh = (tmp_path / relative).read_text()
        assert fresh.startswith("# Generated by prometheus/generate.py")
        assert committed.read_text() == fresh, (
            f"{relative} is out of date: run `python prometheus/generate.py` and commit"
        )
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*.yaml")) == sorted(
        p.relative_to(ROOT) for p in outputs
    )


def test_prometheusrule_has_the_same_groups() -> None:
    resource = load(PROMETHEUSRULE)
    assert resource["apiVersion"] == "monitoring.coreos.com/v1"
    assert resource["kind"] == "PrometheusRule"
    assert resource["metadata"]["name"] == "sqlalchemy-pool-exporter"
    assert resource["spec"]["groups"] == load(RECORDING)["groups"] + load(ALERTS)["groups"]


def test_alerts_only_read_recorded_series_that_exist() -> None:
    recorded = {r["record"] for g in load(RECORDING)["groups"] for r in g["rules"]}
    for rule in alert_rules():
        used = set(re.findall(r"\b\w+:\w+:\w+\b", rule["expr"]))
        assert used <= recorded, (rule["alert"], used - recorded)


@pytest.mark.parametrize("alert", sorted(SPEC_ALERTS))
def test_config_sets_every_alert(alert: str) -> None:
    config = load(RULES / "config.yaml")
    assert config["alerts"][alert]["severity"] == SPEC_ALERTS[alert]


def example_prometheus_config(tmp_path: Path, with_kubernetes: bool) -> Path:
    """deploy/prometheus/prometheus.yml laid out as documented, in ``tmp_path``."""
    text = (ROOT / "deploy" / "prometheus" / "prometheus.yml").read_text()
    if with_kubernetes:
        block = re.search(
            r"  # --- kubernetes_sd example begin\n(.*?)\n  # --- kubernetes_sd example end",
            text,
            re.S,
        )
        assert block is not None
        uncommented = "\n".join(
            re.sub(r"^  # ?", "  ", line) for line in block.group(1).splitlines()
        )
        # Debian's Prometheus is built without Kubernetes service discovery, so promtool
        # there rejects kubernetes_sd_configs; check everything else of the job (its
        # relabelling) with the discovery swapped for a static target.
        assert "    kubernetes_sd_configs:\n      - role: pod\n" in uncommented
        uncommented = uncommented.replace(
            "    kubernetes_sd_configs:\n      - role: pod\n",
            "    static_configs:\n      - targets: ['127.0.0.1:9187']\n",
        )
        text = text.replace(block.group(0), uncommented)
    rules = tmp_path / "sqlalchemy-pool" / "prometheus"
    rules.mkdir(parents=True)
    for path in (RECORDING, ALERTS):
        (rules / path.name).write_text(path.read_text())
    config = tmp_path / "prometheus.yml"
    config.write_text(text)
    return config


@pytest.mark.parametrize("with_kubernetes", [False, True], ids=["static", "kubernetes_sd"])
def test_example_prometheus_config_is_valid(tmp_path: Path, with_kubernetes: bool) -> None:
    promtool = require_binary("promtool")
    config = example_prometheus_config(tmp_path, with_kubernetes)
    result = run(promtool, "check", "config", str(config))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 2 rule files found" in result.stdout + result.stderr
    jobs = [j["job_name"] for j in load(config)["scrape_configs"]]
    expected = ["sqlalchemy-pool-exporter", "billing"]
    assert jobs == [*expected, "sqlalchemy-pool-exporter-k8s"] if with_kubernetes else expected


def test_example_alertmanager_config_is_valid() -> None:
    amtool = require_binary("amtool")
    path = ROOT / "deploy" / "alertmanager" / "alertmanager.yml"
    result = run(amtool, "check-config", str(path))
    assert result.returncode == 0, result.stdout + result.stderr
    config = load(path)
    # inhibitions name real alerts and the labels the alerts carry
    names = set(SPEC_ALERTS)
    for rule in config["inhibit_rules"]:
        for matcher in rule["source_matchers"] + rule["target_matchers"]:
            assert matcher.split("=", 1)[1].strip('"') in names
        assert rule["equal"] == ["namespace", "job", "app", "pool"]
