"""The Kubernetes manifests: rendered by kustomize, validated, and wired together correctly.

``kubectl kustomize`` renders the base and the add-sidecar overlay (the manifests use
only what every kustomize understands, down to the v2 embedded in old kubectl
releases). Core objects are validated with ``kubernetes-validate --strict`` (unknown
fields are errors) against Kubernetes 1.29, the first release with native sidecars,
and the newest it knows. The Prometheus Operator objects have no schema there; they are
checked twice instead: against the CRD types by ``crd/validate.mjs`` (types, enums,
duration patterns, required fields — from @kubernetes-models/prometheus-operator, which
is generated from the operator's Go API), and field by field against
:data:`OPERATOR_FIELDS`, the documented subset of the CRD fields these manifests may use
(CRDs prune unknown fields silently, so a typo would otherwise pass unnoticed).
"""

from __future__ import annotations

import copy
import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from sqlalchemy_pool_exporter.sidecar.settings import SidecarSettings
from tests.conftest import IN_CI, require_binary
from tests.deploy.tools import (
    KUBERNETES,
    ROOT,
    STATE_DIR,
    sidecar_settings,
    split_hostport,
    tool,
)

pytestmark = pytest.mark.integration

CRD_CHECK = Path(__file__).parent / "crd"
SCRAPE_LABEL = {"sqlalchemy-pool-exporter/scrape": "true"}
Objects = dict[tuple[str, str], dict[str, Any]]

_RELABEL = {
    "action": None,
    "sourceLabels": None,
    "separator": None,
    "targetLabel": None,
    "regex": None,
    "replacement": None,
    "modulus": None,
}
_ENDPOINT = {
    "port": None,
    "path": None,
    "scheme": None,
    "interval": None,
    "scrapeTimeout": None,
    "honorLabels": None,
    "relabelings": [_RELABEL],
    "metricRelabelings": [_RELABEL],
}
_SELECTOR = {"matchLabels": None, "matchExpressions": None}
_METADATA = {"name": None, "namespace": None, "labels": None, "annotations": None}
OPERATOR_FIELDS: dict[str, dict[str, Any]] = {
    # Field names of monitoring.coreos.com/v1 (prometheus-operator API reference);
    # None = leaf or free-form map, [x] = list of x, {…} = object with these fields only.
    "PodMonitor": {
        "apiVersion": None,
        "kind": None,
        "metadata": _METADATA,
        "spec": {
            "selector": _SELECTOR,
            "namespaceSelector": {"any": None, "matchNames": None},
            "jobLabel": None,
            "podTargetLabels": None,
            "podMetricsEndpoints": [_ENDPOINT],
        },
    },
    "ServiceMonitor": {
        "apiVersion": None,
        "kind": None,
        "metadata": _METADATA,
        "spec": {
            "selector": _SELECTOR,
            "namespaceSelector": {"any": None, "matchNames": None},
            "jobLabel": None,
            "targetLabels": None,
            "podTargetLabels": None,
            "endpoints": [_ENDPOINT],
        },
    },
    "PrometheusRule": {
        "apiVersion": None,
        "kind": None,
        "metadata": _METADATA,
        "spec": {
            "groups": [
                {
                    "name": None,
                    "interval": None,
                    "limit": None,
                    "labels": None,
                    "query_offset": None,
                    "partial_response_strategy": None,
                    "rules": [
                        {
                            "record": None,
                            "alert": None,
                            "expr": None,
                            "for": None,
                            "keep_firing_for": None,
                            "labels": None,
                            "annotations": None,
                        }
                    ],
                }
            ]
        },
    },
}


def unknown_fields(value: Any, allowed: Any, path: str = "") -> list[str]:
    """Paths in ``value`` whose field names ``allowed`` does not list."""
    if allowed is None:
        return []
    if isinstance(allowed, list):
        return [
            p
            for i, item in enumerate(value)
            for p in unknown_fields(item, allowed[0], f"{path}[{i}]")
        ]
    found = [f"{path}.{key}" for key in value if key not in allowed]
    for key, sub in value.items():
        if key in allowed:
            found += unknown_fields(sub, allowed[key], f"{path}.{key}")
    return found


def render(directory: Path) -> Objects:
    """``kubectl kustomize directory``, keyed by (kind, name)."""
    result = subprocess.run(
        [tool("kubectl"), "kustomize", str(directory)], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    objects: Objects = {}
    for doc in yaml.safe_load_all(result.stdout):
        key = (doc["kind"], doc["metadata"]["name"])
        assert key not in objects
        objects[key] = doc
    return objects


@pytest.fixture(scope="module")
def base() -> Objects:
    """The rendered base."""
    return render(KUBERNETES)


@pytest.fixture(scope="module")
def add_sidecar() -> Objects:
    """The rendered add-sidecar example."""
    return render(KUBERNETES / "add-sidecar")


@pytest.fixture(scope="module")
def servicemonitor_variant(tmp_path_factory: pytest.TempPathFactory) -> Objects:
    """The base with servicemonitor.yaml instead of podmonitor.yaml, as its comment says."""
    copy = tmp_path_factory.mktemp("k8s") / "kubernetes"
    shutil.copytree(KUBERNETES, copy, ignore=shutil.ignore_patterns("add-sidecar"))
    kustomization = yaml.safe_load((copy / "kustomization.yaml").read_text())
    resources = kustomization["resources"]
    resources[resources.index("podmonitor.yaml")] = "servicemonitor.yaml"
    (copy / "kustomization.yaml").write_text(yaml.safe_dump(kustomization))
    return render(copy)


def sidecar_of(deployment: dict[str, Any]) -> dict[str, Any]:
    """The pool-exporter container of a Deployment (a native sidecar)."""
    (sidecar,) = [
        c
        for c in deployment["spec"]["template"]["spec"].get("initContainers", [])
        if c["name"] == "pool-exporter"
    ]
    return sidecar


def env_of(container: dict[str, Any]) -> dict[str, str]:
    """A container's literal environment variables."""
    return {e["name"]: e["value"] for e in container.get("env", []) if "value" in e}


def effective(sidecar: dict[str, Any]) -> SidecarSettings:
    """The sidecar's settings as the container's environment makes them."""
    return sidecar_settings(env_of(sidecar))


def exporter_job() -> str:
    """The job the alert rules select (prometheus/config.yaml, exporter_selector)."""
    config = yaml.safe_load((ROOT / "prometheus" / "config.yaml").read_text())
    match = re.fullmatch(r'job="([^"]+)"', config["exporter_selector"])
    assert match, config["exporter_selector"]
    return match.group(1)


def test_base_renders_app_sidecar_service_podmonitor_and_rules(base: Objects) -> None:
    assert sorted(base) == [
        ("Deployment", "shop"),
        ("PodMonitor", "sqlalchemy-pool-exporter"),
        ("PrometheusRule", "sqlalchemy-pool-exporter"),
        ("Service", "shop"),
    ]


@pytest.mark.parametrize("version", ["1.29", "latest"])
def test_core_objects_validate_strictly(
    base: Objects,
    add_sidecar: Objects,
    servicemonitor_variant: Objects,
    version: str,
    tmp_path: Path,
) -> None:
    core = copy.deepcopy(
        [
            o
            for objects in (base, add_sidecar, servicemonitor_variant)
            for o in objects.values()
            if "monitoring.coreos.com" not in o["apiVersion"]
        ]
    )
    assert len(core) == 5  # Deployment + Service, twice, and the billing Deployment
    rendered = tmp_path / "core.yaml"
    rendered.write_text(yaml.safe_dump_all(core))
    flags = ["--strict"] + ([] if version == "latest" else ["-k", version])
    result = subprocess.run(
        [tool("kubernetes-validate"), *flags, str(rendered)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count(" passed for resource ") == 5, result.stdout
    # And --strict does reject what the API server would: an unknown field.
    deployment = next(o for o in core if o["kind"] == "Deployment")
    sidecar_of(deployment)["imagePullPolicyy"] = "Always"
    rendered.write_text(yaml.safe_dump_all(core))
    result = subprocess.run(
        [tool("kubernetes-validate"), *flags, str(rendered)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1
    assert "'imagePullPolicyy' was unexpected" in result.stdout


def _crd_check(objects: list[dict[str, Any]]) -> subprocess.CompletedProcess[str]:
    node = require_binary("node")
    if not (CRD_CHECK / "node_modules").is_dir():
        message = "tests/deploy/crd/node_modules missing: run `npm ci --prefix tests/deploy/crd`"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    return subprocess.run(
        [node, str(CRD_CHECK / "validate.mjs")],
        input=json.dumps(objects),
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_operator_objects_match_the_crd_schemas(
    base: Objects, servicemonitor_variant: Objects
) -> None:
    objects = [
        o
        for o in [*base.values(), *servicemonitor_variant.values()]
        if "monitoring.coreos.com" in o["apiVersion"]
    ]
    assert sorted(o["kind"] for o in objects) == [
        "PodMonitor",
        "PrometheusRule",
        "PrometheusRule",
        "ServiceMonitor",
    ]
    result = _crd_check(objects)
    assert result.returncode == 0, result.stdout + result.stderr
    assert [json.loads(line)["errors"] for line in result.stdout.splitlines()] == [[]] * 4
    # The check can fail: a duration Prometheus would not parse is an error.
    broken = copy.deepcopy(base[("PodMonitor", "sqlalchemy-pool-exporter")])
    broken["spec"]["podMetricsEndpoints"][0]["interval"] = "15 seconds"
    result = _crd_check([broken])
    assert result.returncode == 1
    (line,) = result.stdout.splitlines()
    assert json.loads(line)["errors"][0].startswith(
        "data/spec/podMetricsEndpoints/0/interval must match pattern"
    )


def test_operator_objects_use_only_known_fields(
    base: Objects, servicemonitor_variant: Objects
) -> None:
    for obj in [*base.values(), *servicemonitor_variant.values()]:
        if obj["kind"] in OPERATOR_FIELDS:
            assert unknown_fields(obj, OPERATOR_FIELDS[obj["kind"]]) == [], obj["kind"]
    typo = {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PodMonitor",
        "metadata": {"name": "x"},
        "spec": {"podMetricsEndpoints": [{"port": "m", "relabellings": []}]},
    }
    assert unknown_fields(typo, OPERATOR_FIELDS["PodMonitor"]) == [
        ".spec.podMetricsEndpoints[0].relabellings"
    ]


def test_prometheusrule_carries_the_bundled_rules(base: Objects, tmp_path: Path) -> None:
    groups = base[("PrometheusRule", "sqlalchemy-pool-exporter")]["spec"]["groups"]
    bundled = [
        g
        for name in ("alerts.yaml", "recording.yaml")
        for g in yaml.safe_load((ROOT / "prometheus" / name).read_text())["groups"]
    ]
    assert sorted(groups, key=lambda g: g["name"]) == sorted(bundled, key=lambda g: g["name"])
    rules = tmp_path / "rules.yaml"
    rules.write_text(yaml.safe_dump({"groups": groups}))
    result = subprocess.run(
        [require_binary("promtool"), "check", "rules", str(rules)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_app_pushes_to_the_sidecar_on_loopback(base: Objects) -> None:
    deployment = base[("Deployment", "shop")]
    sidecar = sidecar_of(deployment)
    assert sidecar["restartPolicy"] == "Always"  # native sidecar: outlives the app
    settings = effective(sidecar)
    push_host, push_port = split_hostport(settings.push_listen)
    assert (push_host, push_port) == ("127.0.0.1", 9188)
    (app,) = deployment["spec"]["template"]["spec"]["containers"]
    assert env_of(app)["POOL_EXPORTER_PUSH_URL"] == f"http://127.0.0.1:{push_port}/v1/push"
    assert env_of(app)["POOL_EXPORTER_APP"] == "shop"
    # The push port is not declared: nothing outside the pod can reach it.
    assert sidecar["ports"] == [{"name": "pool-metrics", "containerPort": 9187, "protocol": "TCP"}]
    assert split_hostport(settings.listen) == ("0.0.0.0", 9187)


def test_sidecar_probes_resources_and_image(base: Objects) -> None:
    sidecar = sidecar_of(base[("Deployment", "shop")])
    assert sidecar["image"] == "sqlalchemy-pool-exporter:0.1.0"
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert sidecar[probe]["httpGet"] == {"path": "/healthz", "port": "pool-metrics"}
    assert set(sidecar["resources"]) == {"requests", "limits"}
    for kind in ("requests", "limits"):
        assert set(sidecar["resources"][kind]) == {"cpu", "memory"}


def _containers(deployment: dict[str, Any]) -> list[dict[str, Any]]:
    spec = deployment["spec"]["template"]["spec"]
    return [*spec.get("initContainers", []), *spec["containers"]]


def test_restricted_security_context(base: Objects) -> None:
    deployment = base[("Deployment", "shop")]
    pod = deployment["spec"]["template"]["spec"]["securityContext"]
    assert pod == {
        "runAsNonRoot": True,
        "runAsUser": 10001,
        "runAsGroup": 10001,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    assert deployment["spec"]["template"]["spec"]["automountServiceAccountToken"] is False
    for container in _containers(deployment):
        context = container["securityContext"]
        assert context["allowPrivilegeEscalation"] is False, container["name"]
        assert context["readOnlyRootFilesystem"] is True, container["name"]
        assert context["capabilities"] == {"drop": ["ALL"]}, container["name"]
        # Python writes nothing but temp files: a writable /tmp is all the app gets; the
        # sidecar also reads its Secret, read-only, and writes its state (see below).
        mounts = [(m["mountPath"], m.get("readOnly", False)) for m in container["volumeMounts"]]
        if container["name"] == "pool-exporter":
            assert mounts == [("/tmp", False), ("/etc/pool-exporter", True), (STATE_DIR, False)]
        else:
            assert mounts == [("/tmp", False)], container["name"]
    # The sidecar is restricted on its own too (the add-sidecar patch relies on it), and
    # its user is the image's.
    assert sidecar_of(deployment)["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "runAsUser": 10001,
        "runAsGroup": 10001,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def _state_volume(deployment: dict[str, Any]) -> dict[str, Any]:
    """The volume the sidecar keeps its state on, checked to be mounted where it says."""
    sidecar = sidecar_of(deployment)
    assert env_of(sidecar)["POOL_EXPORTER_STATE_DIR"] == STATE_DIR, (
        "the sidecar must keep its state (POOL_EXPORTER_STATE_DIR) so counters survive restarts"
    )
    (mount,) = [m for m in sidecar["volumeMounts"] if m["mountPath"] == STATE_DIR]
    assert not mount.get("readOnly", False)
    (volume,) = [
        v for v in deployment["spec"]["template"]["spec"]["volumes"] if v["name"] == mount["name"]
    ]
    return volume


def test_sidecar_state_survives_container_restarts_on_an_empty_dir(
    base: Objects, add_sidecar: Objects
) -> None:
    # An emptyDir lives as long as the pod: a restarted sidecar container (OOM kill,
    # liveness failure) finds its state file and no counter goes down.
    for deployment in (base[("Deployment", "shop")], add_sidecar[("Deployment", "billing")]):
        volume = _state_volume(deployment)
        assert volume == {"name": "pool-exporter-state", "emptyDir": {"sizeLimit": "160Mi"}}


def _matches(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


def test_podmonitor_scrapes_the_sidecar_port_under_the_rules_job(base: Objects) -> None:
    deployment = base[("Deployment", "shop")]
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    monitor = base[("PodMonitor", "sqlalchemy-pool-exporter")]["spec"]
    assert monitor["selector"] == {"matchLabels": SCRAPE_LABEL}
    assert _matches(monitor["selector"]["matchLabels"], pod_labels)
    (endpoint,) = monitor["podMetricsEndpoints"]
    port_names = {p["name"] for c in _containers(deployment) for p in c.get("ports", [])}
    assert endpoint["port"] in port_names and endpoint["port"] == "pool-metrics"
    assert endpoint["path"] == "/metrics"
    assert endpoint["relabelings"] == [
        {"action": "replace", "targetLabel": "job", "replacement": exporter_job()}
    ]


def test_service_and_servicemonitor_reach_the_sidecar(servicemonitor_variant: Objects) -> None:
    assert ("PodMonitor", "sqlalchemy-pool-exporter") not in servicemonitor_variant
    deployment = servicemonitor_variant[("Deployment", "shop")]
    service = servicemonitor_variant[("Service", "shop")]
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert _matches(service["spec"]["selector"], pod_labels)
    ports = {p["name"]: p for p in service["spec"]["ports"]}
    monitor = servicemonitor_variant[("ServiceMonitor", "sqlalchemy-pool-exporter")]["spec"]
    assert _matches(monitor["selector"]["matchLabels"], service["metadata"]["labels"])
    (endpoint,) = monitor["endpoints"]
    listen_port = split_hostport(effective(sidecar_of(deployment)).listen)[1]
    assert ports[endpoint["port"]]["targetPort"] == listen_port
    assert endpoint["relabelings"] == [
        {"action": "replace", "targetLabel": "job", "replacement": exporter_job()}
    ]


def test_add_sidecar_patch_adds_the_same_sidecar_and_keeps_the_app(
    base: Objects, add_sidecar: Objects
) -> None:
    assert sorted(add_sidecar) == [("Deployment", "billing")]
    billing = add_sidecar[("Deployment", "billing")]
    original = yaml.safe_load((KUBERNETES / "add-sidecar" / "existing-deployment.yaml").read_text())
    template = billing["spec"]["template"]
    assert template["metadata"]["labels"] == {"app.kubernetes.io/name": "billing", **SCRAPE_LABEL}
    monitor = base[("PodMonitor", "sqlalchemy-pool-exporter")]["spec"]
    assert _matches(monitor["selector"]["matchLabels"], template["metadata"]["labels"])
    # Same sidecar as the base's, apart from spelling out the default listeners.
    patched, reference = sidecar_of(billing), sidecar_of(base[("Deployment", "shop")])
    assert {k: v for k, v in patched.items() if k != "env"} == {
        k: v for k, v in reference.items() if k != "env"
    }
    assert effective(patched) == effective(reference)
    # The app container keeps what it had and gains the push URL and its app name.
    (app,) = template["spec"]["containers"]
    (before,) = original["spec"]["template"]["spec"]["containers"]
    assert {k: v for k, v in app.items() if k != "env"} == {
        k: v for k, v in before.items() if k != "env"
    }
    assert [e["name"] for e in app["env"]] == [
        "POOL_EXPORTER_PUSH_URL",
        "POOL_EXPORTER_APP",
        "POOL_EXPORTER_TOKEN",
        "DATABASE_URL",
    ]
    assert env_of(app)["POOL_EXPORTER_PUSH_URL"] == "http://127.0.0.1:9188/v1/push"
    # The pod's own security settings are untouched; the volumes the sidecar mounts exist.
    assert "securityContext" not in template["spec"]
    assert [v["name"] for v in template["spec"]["volumes"]] == [
        "pool-exporter-tmp",
        "pool-exporter-secret",
        "pool-exporter-state",
    ]


@pytest.mark.parametrize("which", ["base", "add_sidecar"])
def test_the_push_token_comes_from_a_mounted_secret(
    base: Objects, add_sidecar: Objects, which: str
) -> None:
    deployment = (
        base[("Deployment", "shop")] if which == "base" else add_sidecar[("Deployment", "billing")]
    )
    sidecar = sidecar_of(deployment)
    settings = effective(sidecar)
    # Not as a flag or a literal variable: /proc/<pid>/cmdline and the spec are readable.
    assert settings.token is None and "args" not in sidecar
    assert str(settings.token_file) == "/etc/pool-exporter/token"
    (mount,) = [m for m in sidecar["volumeMounts"] if m["name"] == "pool-exporter-secret"]
    assert (mount["mountPath"], mount["readOnly"]) == ("/etc/pool-exporter", True)
    volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
    assert volumes["pool-exporter-secret"]["secret"] == {"secretName": "pool-exporter"}
    # The app pushes with the same key of the same Secret.
    (app,) = deployment["spec"]["template"]["spec"]["containers"]
    (token,) = [e for e in app["env"] if e["name"] == "POOL_EXPORTER_TOKEN"]
    assert token["valueFrom"] == {"secretKeyRef": {"name": "pool-exporter", "key": "token"}}
