"""End to end: every panel of the Grafana dashboard shows data from a real stack.

The stack is the real thing at every step: a throwaway PostgreSQL server; app processes
(tests/integration/dashboard_workload.py) that are loaded past their pool limit, leak
connections, invalidate them and fail to connect to a missing database, pushing through
``POOL_EXPORTER_PUSH_URL`` to a real ``sqlalchemy-pool-exporter serve`` sidecar whose
PostgreSQL probe watches the server, and to a second one with ``--per-process`` output;
one more process in embedded mode (no ``app`` label); and a real Prometheus scraping
all three, with the project's recording and alert
rules loaded (generated from prometheus/config.yaml with every ``for`` set to 0s, so
the alerts fire within the test instead of after minutes). One pushing process is killed
with SIGKILL (the sidecar expires it) and one malformed push is sent (rejected).

Then the dashboard is read the way Grafana reads it: each variable's
``label_values(selector, label)`` is resolved through the label-values API, the
variables are substituted — once with every variable on "All" (``.*``), once with every
discovered value selected (Grafana's multi-value format ``(a|b)``, regex-escaped) — and
every panel query runs through the HTTP API (range queries; instant ones as instant).
Each must return at least one series with a value above zero (instant queries: in some
round of polling, as the load comes in waves): a panel that only ever shows zeros would
not prove that its query measures anything.
"""

from __future__ import annotations

import json
import math
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import require_binary
from tests.integration import promstack
from tests.integration.conftest import RunningSidecar, start_sidecar_process
from tests.integration.pgcluster import PgCluster, throwaway_cluster

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "grafana" / "dashboards" / "sqlalchemy-pools.json"
JOB = "sqlalchemy-pool-exporter"  # the job the shipped alert rules expect
APP = "shop"
RATE_INTERVAL = "10s"  # $__rate_interval: ten 1 s scrapes
DEADLINE = 90.0  # seconds for every query to show data


@pytest.fixture(scope="module")
def postgres() -> Iterator[PgCluster]:
    with throwaway_cluster(max_connections=40, reserved_connections=3) as cluster:
        yield cluster


def fast_rules(workdir: Path) -> list[Path]:
    """The project's rules, generated from its config with every ``for`` set to 0s."""
    config = yaml.safe_load((ROOT / "prometheus" / "config.yaml").read_text())
    for alert in config["alerts"].values():
        if "for" in alert:
            alert["for"] = "0s"
    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    subprocess.run(
        [
            sys.executable,
            str(ROOT / "prometheus" / "generate.py"),
            "--config",
            str(path),
            "--out",
            str(workdir),
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    return [workdir / "prometheus" / "recording.yaml", workdir / "prometheus" / "alerts.yaml"]


class Workload:
    """App processes running dashboard_workload, stopped (SIGTERM, then SIGKILL) at the end."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.processes: list[subprocess.Popen[bytes]] = []

    def start(self, name: str, env: dict[str, str], *args: str) -> subprocess.Popen[bytes]:
        full_env = {k: v for k, v in os.environ.items() if not k.startswith("POOL_EXPORTER_")}
        full_env.update(env, PYTHONPATH=str(ROOT))
        log = open(self.workdir / f"{name}.log", "wb")  # noqa: SIM115 - the child owns it
        process = subprocess.Popen(
            [sys.executable, "-m", "tests.integration.dashboard_workload", *args],
            env=full_env,
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        log.close()
        self.processes.append(process)
        return process

    def stop(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.terminate()
        for process in self.processes:
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)

    def logs(self) -> str:
        return "\n".join(
            f"--- {p.name}\n{p.read_text(errors='replace')[-2000:]}"
            for p in sorted(self.workdir.glob("*.log"))
        )


@dataclass
class Stack:
    prometheus: promstack.Prometheus
    sidecar: RunningSidecar  # aggregated output, with the database probe
    per_process_sidecar: RunningSidecar  # --per-process: one series per process
    workload: Workload


@pytest.fixture
def stack(postgres: PgCluster, tmp_path: Path) -> Iterator[Stack]:
    require_binary("prometheus")
    probe_url = f"postgresql://monitor@127.0.0.1:{postgres.port}/postgres"
    sidecars = [start_sidecar_process("--database-url", probe_url, "--probe-interval", "1")]
    workload = Workload(tmp_path)
    prometheus: promstack.Prometheus | None = None
    try:
        sidecars.append(start_sidecar_process("--per-process"))
        url = postgres.url(user="app")
        bad_url = postgres.url(user="app", database="no_such_database")
        app_env = {
            "POOL_EXPORTER_PUSH_INTERVAL": "1",
            "POOL_EXPORTER_APP": APP,
            "POOL_EXPORTER_LEAK_THRESHOLD": "1",
        }
        for name, sidecar in (
            ("worker-1", sidecars[0]),
            ("worker-doomed", sidecars[0]),
            ("worker-per-process", sidecars[1]),
        ):
            workload.start(
                name,
                {**app_env, "POOL_EXPORTER_PUSH_URL": sidecar.push_url},
                "--url",
                url,
                "--bad-url",
                bad_url,
            )
        port_file = tmp_path / "embedded.port"
        workload.start(
            "embedded",
            {"POOL_EXPORTER_LEAK_THRESHOLD": "1"},
            "--url",
            url,
            "--bad-url",
            bad_url,
            "--port-file",
            str(port_file),
        )
        embedded_port = promstack.wait_for(
            lambda: (port_file.exists() and port_file.read_text().strip()) or None,
            timeout=30,
            what="the embedded-mode process's metrics port",
        )
        config = promstack.prometheus_config(
            scrape_targets={
                JOB: [f"127.0.0.1:{s.metrics_port}" for s in sidecars],
                "embedded-app": [f"127.0.0.1:{embedded_port}"],
            },
            rule_files=fast_rules(tmp_path / "rules"),
            interval="1s",
        )
        prometheus = promstack.Prometheus(config, workdir=tmp_path / "prometheus")
        prometheus.start()
        yield Stack(prometheus, sidecars[0], sidecars[1], workload)
    finally:
        if prometheus is not None:
            prometheus.cleanup()
        workload.stop()
        for sidecar in sidecars:
            sidecar.stop()


# -- reading the dashboard as Grafana does ----------------------------------------------


def panels(dash: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in dash["panels"]:
        if panel["type"] != "row":
            yield panel
        yield from panel.get("panels", [])


def regex_escape(value: str) -> str:
    """Grafana's Prometheus regex escaping of a variable value (inside a PromQL string)."""
    return re.sub(r"([\\^$*+?.()|{}\[\]])", r"\\\\\1", value)


def resolve_variables(
    prom: promstack.Prometheus, dash: dict[str, Any], start: float, end: float, all_values: bool
) -> dict[str, str]:
    """Each variable's value as Grafana interpolates it: "All" or every value selected."""
    values: dict[str, str] = {}
    for var in dash["templating"]["list"]:
        if var["type"] != "query":
            continue
        match = re.fullmatch(r"label_values\((.+), (\w+)\)", var["query"])
        assert match is not None, var["query"]
        selector = interpolate(match.group(1), values)
        found: list[str] = prom.get(
            f"/api/v1/label/{match.group(2)}/values",
            {"match[]": selector, "start": f"{start:.3f}", "end": f"{end:.3f}"},
        )["data"]
        if all_values and found:
            values[var["name"]] = "(" + "|".join(regex_escape(v) for v in found) + ")"
        else:
            values[var["name"]] = var["allValue"]
    return values


def interpolate(expr: str, values: dict[str, str]) -> str:
    expr = expr.replace("$__rate_interval", RATE_INTERVAL)
    for name, value in values.items():
        expr = expr.replace(f"${name}", value)
    return expr


def positive(result: list[dict[str, Any]]) -> bool:
    """Some sample of some series is a finite number above zero."""
    for series in result:
        samples = series.get("values") or [series["value"]]
        for _, value in samples:
            number = float(value)
            if math.isfinite(number) and number > 0:
                return True
    return False


def run_queries(
    prom: promstack.Prometheus,
    dash: dict[str, Any],
    values: dict[str, str],
    start: float,
    end: float,
) -> dict[str, list[dict[str, Any]]]:
    """Every panel target's result, keyed "#id panel title [refId]"."""
    results = {}
    for panel in panels(dash):
        for target in panel["targets"]:
            expr = interpolate(target["expr"], values)
            assert "$" not in expr, expr
            if target.get("instant"):
                result = prom.query(expr, at=end)
            else:
                result = prom.query_range(expr, start, end, "1s")
            results[f"#{panel['id']} {panel['title']} [{target['refId']}]"] = result
    return results


def test_every_panel_query_returns_data(stack: Stack) -> None:
    prom, sidecar, workload = stack.prometheus, stack.sidecar, stack.workload
    dash = json.loads(DASHBOARD.read_text())
    start = time.time()
    prom.wait_for_targets_up(JOB, timeout=30)
    prom.wait_for_targets_up("embedded-app", timeout=30)

    # A worker dies without its final push: the sidecar must expire it.
    sidecar.wait_until(lambda: sidecar.value("pool_exporter_processes") == 2, 30)
    doomed = workload.processes[1]
    doomed.send_signal(signal.SIGKILL)
    doomed.wait(10)
    # A client speaking nonsense is rejected, and counted.
    request = urllib.request.Request(sidecar.push_url, data=b"{not json", method="POST")
    with pytest.raises(urllib.error.HTTPError) as rejected:
        urllib.request.urlopen(request, timeout=5)
    assert rejected.value.code == 400

    # Instant queries (tables) see one moment, and the load comes in waves: a query
    # counts once it has shown data in some round.
    seen: set[tuple[str, str]] = set()
    deadline = time.monotonic() + DEADLINE
    while True:
        end = time.time()
        missing: dict[str, list[str]] = {}
        for mode in ("all", "every value"):
            values = resolve_variables(prom, dash, start - 60, end, mode == "every value")
            for where, result in run_queries(prom, dash, values, start, end).items():
                if positive(result):
                    seen.add((where, mode))
                elif (where, mode) not in seen:
                    missing.setdefault(where, []).append(mode)
        if not missing or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert missing == {}, (
        "panel queries without data (variables on All / on every value):\n"
        + "\n".join(f"  {where}: {modes}" for where, modes in sorted(missing.items()))
        + "\n"
        + workload.logs()
    )
    assert len(seen) == 2 * sum(len(p["targets"]) for p in panels(dash))

    all_values = resolve_variables(prom, dash, start - 60, time.time(), all_values=False)

    # Both kinds of invalidation happened, and the panel tells them apart.
    invalidations = next(
        t["expr"]
        for p in panels(dash)
        for t in p["targets"]
        if p["title"] == "Invalidations by kind and cause"
    )
    by_kind = prom.query_range(interpolate(invalidations, all_values), start, time.time(), "1s")
    assert {s["metric"]["kind"] for s in by_kind if positive([s])} == {"hard", "soft"}

    # The variables found what the stack has; namespace has no values outside Kubernetes.
    def label_values(label: str, selector: str = "sqlalchemy_pool_connections") -> list[str]:
        found: list[str] = prom.get(f"/api/v1/label/{label}/values", {"match[]": selector})["data"]
        return found

    assert label_values("job") == ["embedded-app", JOB]
    assert label_values("namespace") == []
    assert label_values("app") == [APP]
    assert label_values("pool") == ["orders", "reports"]

    # Embedded-mode series (no app label) are on the dashboard with "All" selected.
    checked_out = next(
        t["expr"]
        for p in panels(dash)
        for t in p["targets"]
        if p["title"] == "Checked out / idle / limit"
    )
    groups = {
        tuple(sorted(s["metric"].items())) for s in prom.query(interpolate(checked_out, all_values))
    }
    assert groups == {
        (("app", APP), ("pool", "orders")),
        (("app", APP), ("pool", "reports")),
        (("pool", "orders"),),
        (("pool", "reports"),),
    }

    # With per-process output, the overview table names the process of each line.
    [process] = [p["process"] for p in stack.per_process_sidecar.api()["processes"]]
    table = next(
        t["expr"]
        for p in panels(dash)
        for t in p["targets"]
        if p["title"] == "Pools at a glance" and t["refId"] == "A"
    )
    lines = {
        (s["metric"].get("pool"), s["metric"].get("process"))
        for s in prom.query(interpolate(table, all_values))
    }
    assert {(pool, None) for pool in ("orders", "reports")} <= lines
    assert {line for line in lines if line[1] is not None} == {
        ("orders", process),
        ("reports", process),
    }
