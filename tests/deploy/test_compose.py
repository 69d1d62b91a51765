"""The compose stack: it parses, and every file and port it references exists and agrees.

``docker-compose config`` (or ``docker compose config``) needs no docker engine: it
validates the file against the compose schema and prints it normalized, with paths made
absolute, which is what these checks read. They follow each connection of the stack:
app → sidecar push listener (address and token), Prometheus → sidecar metrics port and
the rule files it mounts, Prometheus → Alertmanager, Grafana → Prometheus (provisioned
data source) and the dashboards directory, app and probe → PostgreSQL credentials.
Prometheus' and Alertmanager's configurations are checked by promtool and amtool.
"""

from __future__ import annotations

import re
import runpy
import shutil
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from sqlalchemy_pool_exporter.sidecar.settings import SidecarSettings
from tests.conftest import require_binary
from tests.deploy.tools import COMPOSE_DIR, ROOT, STATE_DIR, read_dockerfile, split_hostport
from tests.deploy.tools import sidecar_settings as settings_of

pytestmark = pytest.mark.integration

COMPOSE_FILE = COMPOSE_DIR / "compose.yaml"


def compose_command() -> list[str]:
    """``docker-compose`` (Debian's package) or the ``docker compose`` plugin."""
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    docker = shutil.which("docker")
    if (
        docker
        and subprocess.run(
            [docker, "compose", "version"], capture_output=True, timeout=30
        ).returncode
        == 0
    ):
        return [docker, "compose"]
    return [require_binary("docker-compose")]


@pytest.fixture(scope="module")
def services() -> dict[str, Any]:
    """The normalized services of compose.yaml (as ``config`` prints them)."""
    result = subprocess.run(
        [*compose_command(), "-f", str(COMPOSE_FILE), "config"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=COMPOSE_DIR,
    )
    assert result.returncode == 0, result.stderr
    services: dict[str, Any] = yaml.safe_load(result.stdout)["services"]
    return services


def mounts(service: dict[str, Any]) -> dict[str, Path]:
    """Bind mounts of a service: container path → host path."""
    out: dict[str, Path] = {}
    for volume in service.get("volumes", []):
        if isinstance(volume, str):  # compose v1: "source:target[:mode]"
            source, target = volume.split(":")[:2]
            if not source.startswith(("/", ".")):
                continue  # a named volume
        else:  # compose v2: long syntax
            if volume["type"] == "volume":
                continue
            assert volume["type"] == "bind", volume
            source, target = volume["source"], volume["target"]
        out[target] = Path(source)
    return out


def named_volumes(service: dict[str, Any]) -> dict[str, str]:
    """Named volumes of a service: container path → volume name."""
    out: dict[str, str] = {}
    for volume in service.get("volumes", []):
        if isinstance(volume, str):
            source, target = volume.split(":")[:2]
            if not source.startswith(("/", ".")):
                out[target] = source
        elif volume["type"] == "volume":
            out[volume["target"]] = volume["source"]
    return out


def published(service: dict[str, Any]) -> dict[int, tuple[str, int]]:
    """Published ports of a service: container port → (host address, host port)."""
    out: dict[int, tuple[str, int]] = {}
    for port in service.get("ports", []):
        if isinstance(port, str):  # compose v1: "host_ip:published:target/proto"
            host, host_port, target = port.split("/")[0].split(":")
            out[int(target)] = (host, int(host_port))
        else:
            out[int(port["target"])] = (port.get("host_ip", ""), int(port["published"]))
    return out


def sidecar_settings(services: dict[str, Any]) -> SidecarSettings:
    """The sidecar's settings as its environment makes them."""
    return settings_of(services["sidecar"]["environment"])


def test_compose_file_is_valid_and_has_the_whole_stack(services: dict[str, Any]) -> None:
    assert sorted(services) == [
        "alertmanager",
        "app",
        "grafana",
        "loadgen",
        "postgres",
        "prometheus",
        "sidecar",
    ]
    # Upstream images are pinned to a release, so the stack does not change under users.
    for name, service in services.items():
        if "build" not in service:
            assert re.fullmatch(r"[\w./-]+:v?\d+\.\d+(\.\d+)?(-[a-z]+)?", service["image"]), name


def test_compose_config_rejects_a_broken_file(tmp_path: Path) -> None:
    broken = tmp_path / "compose.yaml"
    good = COMPOSE_FILE.read_text()
    published_port = '    ports:\n      - "127.0.0.1:9187:9187"'
    broken.write_text(good.replace(published_port, "    ports: 9187", 1))
    assert broken.read_text() != good
    result = subprocess.run(
        [*compose_command(), "-f", str(broken), "config", "-q"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert result.returncode != 0
    assert "services.sidecar.ports" in result.stderr


def test_every_referenced_file_exists(services: dict[str, Any]) -> None:
    for name, service in services.items():
        for target, source in mounts(service).items():
            assert source.exists(), f"{name}: {source} (mounted at {target}) does not exist"
        if "build" in service:
            context = Path(service["build"]["context"])
            assert context == ROOT, name
            assert (context / service["build"]["dockerfile"]).is_file(), name


def test_sidecar_keeps_its_state_on_a_named_volume(services: dict[str, Any]) -> None:
    # A restarted or recreated sidecar container finds its state: no counter goes down.
    sidecar = services["sidecar"]
    assert sidecar["environment"]["POOL_EXPORTER_STATE_DIR"] == STATE_DIR, (
        "set POOL_EXPORTER_STATE_DIR on the compose sidecar so counters survive restarts"
    )
    volume = named_volumes(sidecar).get(STATE_DIR)
    assert volume is not None, f"mount a named volume at {STATE_DIR} in the sidecar"
    declared = yaml.safe_load(COMPOSE_FILE.read_text())["volumes"]
    assert volume in declared, f"declare the volume {volume!r} under top-level volumes:"
    # The image owns that directory, so a new volume starts out writable by its user.
    assert (
        f"install -d -o 10001 -g 10001 -m 0700 {STATE_DIR}" in read_dockerfile()[-1].all("RUN")[0]
    )


def test_app_pushes_to_the_sidecar_with_the_same_token(services: dict[str, Any]) -> None:
    settings = sidecar_settings(services)
    host, port = split_hostport(settings.push_listen)
    # Another container: the push listener must accept the compose network...
    assert host == "0.0.0.0"
    app_env = services["app"]["environment"]
    assert app_env["POOL_EXPORTER_PUSH_URL"] == f"http://sidecar:{port}/v1/push"
    # ...so it is protected by a token both sides share, and never published.
    assert settings.token is not None
    assert app_env["POOL_EXPORTER_TOKEN"] == settings.token.get_secret_value()
    assert port not in published(services["sidecar"])


def test_sidecar_metrics_port_is_scraped_by_prometheus_under_the_rules_job(
    services: dict[str, Any],
) -> None:
    host, port = split_hostport(sidecar_settings(services).listen)
    assert host == "0.0.0.0"
    assert published(services["sidecar"]) == {port: ("127.0.0.1", port)}
    config_path = mounts(services["prometheus"])["/etc/prometheus/prometheus.yml"]
    assert services["prometheus"]["command"][0] == "--config.file=/etc/prometheus/prometheus.yml"
    config = yaml.safe_load(config_path.read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    rules_config = yaml.safe_load((ROOT / "prometheus" / "config.yaml").read_text())
    job = re.fullmatch(r'job="([^"]+)"', rules_config["exporter_selector"])
    assert job is not None
    (static,) = jobs[job.group(1)]["static_configs"]
    assert static["targets"] == [f"sidecar:{port}"]


def test_prometheus_loads_the_bundled_rules_and_passes_promtool(
    services: dict[str, Any], tmp_path: Path
) -> None:
    prometheus_mounts = mounts(services["prometheus"])
    config = yaml.safe_load(prometheus_mounts["/etc/prometheus/prometheus.yml"].read_text())
    assert {prometheus_mounts[f] for f in config["rule_files"]} == {
        ROOT / "prometheus" / "alerts.yaml",
        ROOT / "prometheus" / "recording.yaml",
    }
    (alertmanagers,) = config["alerting"]["alertmanagers"]
    assert alertmanagers["static_configs"] == [{"targets": ["alertmanager:9093"]}]
    assert 9093 in published(services["alertmanager"])
    # promtool sees the file as Prometheus would, with the mounts resolved to the host.
    local = dict(config, rule_files=[str(prometheus_mounts[f]) for f in config["rule_files"]])
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(local))
    result = subprocess.run(
        [require_binary("promtool"), "check", "config", str(tmp_path / "prometheus.yml")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 2 rule files found" in result.stdout + result.stderr


def test_alertmanager_config_passes_amtool(services: dict[str, Any]) -> None:
    config = mounts(services["alertmanager"])["/etc/alertmanager/alertmanager.yml"]
    assert services["alertmanager"]["command"] == [
        "--config.file=/etc/alertmanager/alertmanager.yml"
    ]
    result = subprocess.run(
        [require_binary("amtool"), "check-config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_grafana_provisioning_points_at_prometheus_and_the_dashboards(
    services: dict[str, Any],
) -> None:
    grafana = mounts(services["grafana"])
    assert grafana == {
        "/etc/grafana/provisioning": ROOT / "grafana" / "provisioning",
        "/var/lib/grafana/dashboards": ROOT / "grafana" / "dashboards",
    }
    datasources = [
        ds
        for path in sorted((ROOT / "grafana/provisioning/datasources").glob("*.y*ml"))
        for ds in yaml.safe_load(path.read_text())["datasources"]
    ]
    prometheus_port = 9090  # Prometheus' default --web.listen-address, not overridden:
    assert not any(a.startswith("--web.listen-address") for a in services["prometheus"]["command"])
    assert [(ds["type"], ds["url"]) for ds in datasources] == [
        ("prometheus", f"http://prometheus:{prometheus_port}")
    ]
    assert published(services["prometheus"]) == {prometheus_port: ("127.0.0.1", prometheus_port)}
    providers = [
        p
        for path in sorted((ROOT / "grafana/provisioning/dashboards").glob("*.y*ml"))
        for p in yaml.safe_load(path.read_text())["providers"]
    ]
    assert [p["options"]["path"] for p in providers] == ["/var/lib/grafana/dashboards"]
    home = services["grafana"]["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert (
        ROOT / "grafana" / "dashboards" / Path(home).relative_to("/var/lib/grafana/dashboards")
    ).is_file()


def test_database_credentials_agree(services: dict[str, Any]) -> None:
    pg_env = services["postgres"]["environment"]
    app_url = urlsplit(services["app"]["environment"]["DATABASE_URL"])
    assert (app_url.hostname, app_url.port, app_url.username, app_url.password, app_url.path) == (
        "postgres",
        5432,
        pg_env["POSTGRES_USER"],
        pg_env["POSTGRES_PASSWORD"],
        "/" + pg_env["POSTGRES_DB"],
    )
    settings = sidecar_settings(services)
    assert settings.database_url is not None
    probe_url = urlsplit(settings.database_url.get_secret_value())
    assert (probe_url.hostname, probe_url.port, probe_url.path) == (
        "postgres",
        5432,
        "/" + pg_env["POSTGRES_DB"],
    )
    init = mounts(services["postgres"])["/docker-entrypoint-initdb.d/10-shop.sql"].read_text()
    assert f"CREATE ROLE {probe_url.username} LOGIN PASSWORD '{probe_url.password}'" in init
    assert f"GRANT pg_monitor TO {probe_url.username};" in init


def test_app_runs_several_gunicorn_workers_on_its_published_port(services: dict[str, Any]) -> None:
    config = runpy.run_path(str(COMPOSE_DIR / "app" / "gunicorn.conf.py"))
    assert config["workers"] == 4
    host, port = split_hostport(config["bind"])
    assert host == "0.0.0.0"
    assert published(services["app"]) == {port: ("127.0.0.1", port)}
    assert services["loadgen"]["environment"]["LOADGEN_TARGET"] == f"http://app:{port}"
