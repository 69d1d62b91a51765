"""The image's entrypoint and the bundled assets, from the built wheel in a fresh virtualenv.

No docker engine exists where the suite runs, so this mirrors the Dockerfile instead of
building it (see ``conftest.image_venv``): the build stage's own RUN line makes the
wheel and the virtualenv, and the ENTRYPOINT and HEALTHCHECK commands are read from the
Dockerfile and run from that virtualenv, configured only by POOL_EXPORTER_* variables.
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
import urllib.request
import zipfile
from pathlib import Path
from typing import Any

import pytest

from sqlalchemy_pool_exporter.cli.assets import iter_assets
from tests.conftest import require_binary
from tests.deploy.tools import ROOT, ImageVenv, read_dockerfile
from tests.sidecar_log import watch_listening

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_wheel_carries_exactly_the_repository_assets(image_venv: ImageVenv) -> None:
    expected = list(iter_assets(ROOT))
    assert {str(p) for p in expected} >= {
        "grafana/dashboards/sqlalchemy-pools.json",
        "prometheus/alerts.yaml",
        "prometheus/recording.yaml",
    }
    with zipfile.ZipFile(image_venv.wheel) as wheel:
        packaged = {
            name.removeprefix("sqlalchemy_pool_exporter/_assets/"): wheel.read(name)
            for name in wheel.namelist()
            if name.startswith("sqlalchemy_pool_exporter/_assets/")
        }
    assert sorted(packaged) == sorted(str(p) for p in expected)
    for relative in expected:
        assert packaged[str(relative)] == (ROOT / relative).read_bytes(), relative


def test_installed_package_reads_its_packaged_assets(image_venv: ImageVenv, tmp_path: Path) -> None:
    result = image_venv.run(
        "python",
        "-c",
        "import sqlalchemy_pool_exporter as e, sqlalchemy_pool_exporter.cli.assets as a;"
        " print(e.__file__); print(a.asset_root())",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    module, root = result.stdout.split()
    site = image_venv.venv / "lib"
    assert Path(module).is_relative_to(site)  # the wheel, not this checkout
    assert Path(root).is_relative_to(site)
    assert Path(root).parts[-2:] == ("sqlalchemy_pool_exporter", "_assets")


def test_the_wheel_installs_sqlalchemy_pool_exporter_and_no_exporter_package(
    image_venv: ImageVenv, tmp_path: Path
) -> None:
    def run(code: str) -> subprocess.CompletedProcess[str]:
        return image_venv.run("python", "-c", code, cwd=tmp_path)

    found = run("import sqlalchemy_pool_exporter as e; print(e.instrument.__qualname__)")
    assert (found.returncode, found.stdout) == (0, "instrument\n"), found.stderr
    gone = run("import exporter")
    assert gone.returncode == 1
    assert gone.stderr.strip().splitlines()[-1] == "ModuleNotFoundError: No module named 'exporter'"


def test_assets_command_writes_files_identical_to_the_repository(
    image_venv: ImageVenv, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    result = image_venv.run(
        "sqlalchemy-pool-exporter", "assets", "--output", str(out), cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    expected = list(iter_assets(ROOT))
    assert result.stdout.splitlines() == [str(out / p) for p in expected]
    written = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    assert written == sorted(str(p) for p in expected)
    for relative in expected:
        assert (out / relative).read_bytes() == (ROOT / relative).read_bytes(), relative
    # Written out, the rules still work on their own: their promtool tests pass there.
    rule_tests = sorted(str(p) for p in (out / "prometheus" / "tests").glob("*.yaml"))
    assert rule_tests
    result = subprocess.run(
        [require_binary("promtool"), "test", "rules", *rule_tests],
        cwd=out / "prometheus" / "tests",
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def _start_entrypoint(
    image_venv: ImageVenv, cwd: Path
) -> tuple[subprocess.Popen[str], dict[str, Any], list[str]]:
    entrypoint = read_dockerfile()[-1].exec_form("ENTRYPOINT")
    env = image_venv.env(
        POOL_EXPORTER_LISTEN="127.0.0.1:0",
        POOL_EXPORTER_PUSH_LISTEN="127.0.0.1:0",
        POOL_EXPORTER_LOG_FORMAT="json",
    )
    process = subprocess.Popen(
        [str(image_venv.bin / entrypoint[0]), *entrypoint[1:]],
        cwd=cwd,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stderr is not None
    found, lines = watch_listening(process.stderr)
    return process, found, lines


def _healthcheck(image_venv: ImageVenv, cwd: Path, port: int) -> int:
    command = read_dockerfile()[-1].exec_form("HEALTHCHECK")
    assert command[0] == "python"
    listen = {"POOL_EXPORTER_LISTEN": f"0.0.0.0:{port}"}  # the port the container was given
    result = image_venv.run("python", *command[1:], cwd=cwd, timeout=30, **listen)
    return result.returncode


def test_entrypoint_serves_healthz_and_the_healthcheck_sees_it(
    image_venv: ImageVenv, tmp_path: Path
) -> None:
    process, found, lines = _start_entrypoint(image_venv, tmp_path)
    try:
        assert found, "no 'listening' line: " + "".join(lines[-5:])
        port = int(found["metrics"].rsplit(":", 1)[1])
        assert found["metrics"] == f"http://127.0.0.1:{port}"
        assert found["push"].startswith("http://127.0.0.1:") and found["push"].endswith("/v1/push")
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=10) as response:
            assert response.status == 200
            assert json.loads(response.read()) == {"status": "ok", "processes": 0}
        # The image's HEALTHCHECK, with the metrics port the container was given.
        assert _healthcheck(image_venv, tmp_path, port) == 0
        # `docker stop` sends SIGTERM: the sidecar exits cleanly and promptly.
        started = time.monotonic()
        process.send_signal(signal.SIGTERM)
        assert process.wait(15) == 0
        assert time.monotonic() - started < 10
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(5)
    # Nobody listens any more: the healthcheck must now fail.
    assert _healthcheck(image_venv, tmp_path, port) == 1


def test_run_and_the_url_plugin_work_from_the_wheel(image_venv: ImageVenv, tmp_path: Path) -> None:
    # The bootstrap sitecustomize and the sqlalchemy.plugins entry point ship in the wheel.
    code = (
        "from sqlalchemy import create_engine\n"
        "import sqlalchemy_pool_exporter as e\n"
        "a = create_engine('sqlite://')\n"
        "b = create_engine('sqlite://?plugin=pool_exporter&pool_exporter_name=plugged')\n"
        "print(sorted((i.stats.name, i.automatic) for i in e.instrumentations()))"
    )
    result = image_venv.run(
        "sqlalchemy-pool-exporter", "run", "--", "python", "-c", code, cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == "[('plugged', False), ('sqlite://', True)]\n"
