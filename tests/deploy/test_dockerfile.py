"""The sidecar image, without a docker engine: hadolint, and what the Dockerfile promises.

``docker build`` cannot run where the suite runs, so the build itself is mirrored in
``test_wheel.py`` (wheel → fresh virtualenv → ENTRYPOINT and HEALTHCHECK commands);
this module lints both Dockerfiles and checks the image's contract line by line.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from sqlalchemy_pool_exporter.sidecar.settings import SidecarSettings
from tests.deploy.tools import COMPOSE_DIR, DOCKERFILE, ROOT, read_dockerfile, split_hostport, tool

DOCKERFILES = [DOCKERFILE, COMPOSE_DIR / "app" / "Dockerfile"]


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_hadolint_clean(path: Path) -> None:
    result = subprocess.run(
        [tool("hadolint"), "--no-color", str(path)], capture_output=True, text=True, timeout=60
    )
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")


def test_hadolint_reports_a_bad_dockerfile(tmp_path: Path) -> None:
    # The linter must be able to fail: an unpinned base and a root user are findings.
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nUSER root\nRUN pip install requests\n")
    result = subprocess.run(
        [tool("hadolint"), "--no-color", str(bad)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 1
    assert {"DL3007", "DL3002", "DL3013"} <= set(re.findall(r"DL\d{4}", result.stdout))


def test_multi_stage_on_one_pinned_slim_base() -> None:
    stages = read_dockerfile()
    assert len(stages) == 2
    assert stages[0].alias == "build"
    assert re.fullmatch(r"python:3\.11\.\d+-slim-bookworm", stages[0].base)
    assert stages[1].base == stages[0].base
    # Only the virtualenv crosses over: no source, no wheel cache, no build tooling.
    assert stages[1].all("COPY") == ["--from=build /opt/venv /opt/venv"]


def test_runs_as_numeric_non_root_user() -> None:
    final = read_dockerfile()[-1]
    assert final.all("USER") == ["10001:10001"]
    assert "--uid 10001" in final.all("RUN")[0]


def test_exposes_the_sidecar_default_ports() -> None:
    final = read_dockerfile()[-1]
    defaults = SidecarSettings()
    expected = {split_hostport(defaults.listen)[1], split_hostport(defaults.push_listen)[1]}
    assert expected == {9187, 9188}
    assert final.all("EXPOSE") == ["9187 9188"]


def test_entrypoint_is_serve_configured_only_by_environment() -> None:
    final = read_dockerfile()[-1]
    assert final.exec_form("ENTRYPOINT") == ["sqlalchemy-pool-exporter", "serve"]
    # No CMD flags and no listener settings baked in: POOL_EXPORTER_* decides, and the
    # defaults (push on loopback) are the right ones for a Kubernetes pod.
    assert final.all("CMD") == []
    assert final.env() == {
        "PATH": "/opt/venv/bin:$PATH",
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONUNBUFFERED": "1",
    }


def test_healthcheck_asks_healthz_with_the_standard_library() -> None:
    final = read_dockerfile()[-1]
    (healthcheck,) = final.all("HEALTHCHECK")
    assert healthcheck.startswith("--interval=15s --timeout=5s --start-period=10s --retries=3 CMD ")
    command = final.exec_form("HEALTHCHECK")
    assert command[:2] == ["python", "-c"]
    assert "urllib.request.urlopen(" in command[2] and "/healthz" in command[2]
    assert "POOL_EXPORTER_LISTEN" in command[2]  # follows a changed metrics port


def test_build_context_carries_every_copied_path() -> None:
    # .dockerignore is an allow-list: whatever a COPY names must be allowed back in.
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    allowed = {line.strip("!/").rstrip("/") for line in lines if line.startswith("!")}
    for dockerfile in DOCKERFILES:
        for stage in read_dockerfile(dockerfile):
            for args in stage.all("COPY"):
                if args.startswith("--from="):
                    continue
                *sources, _destination = args.split()
                for source in sources:
                    path = source.rstrip("/")
                    assert (ROOT / path).exists(), f"{dockerfile.name}: COPY {source} missing"
                    assert any(path == a or path.startswith(a + "/") for a in allowed), (
                        f"{dockerfile.name}: COPY {source} is excluded by .dockerignore"
                    )
