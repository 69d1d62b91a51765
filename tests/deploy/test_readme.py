"""The README's commands that can run here, run as written (``tests/unit`` checks the rest).

From the wheel the image build makes (``conftest.image_venv``, the README's "build a
wheel once and install that anywhere"): ``--help``, the ``assets`` command and the demo
with ``status`` beside it. From a fresh copy of the repository: every generator command
of the Development section and the promtool checks, which must leave the committed
files exactly as they are. Commands that need a docker engine, a cluster or the network
(``docker build``, ``kubectl apply``, ``npm ci``) are checked for their paths only.
"""

from __future__ import annotations

import fnmatch
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests import readme
from tests.conftest import require_binary
from tests.deploy.tools import ROOT, ImageVenv, read_dockerfile

pytestmark = [pytest.mark.integration, pytest.mark.slow]

#: README commands (by how they start) run as written in a fresh copy of the repository.
GENERATORS = (
    "python scripts/metrics_doc.py --write",
    "python prometheus/generate.py",
    "promtool check rules prometheus/recording.yaml prometheus/alerts.yaml",
    "promtool test rules prometheus/tests/*.yaml",
    "python grafana/generate.py",
)
#: What the generators write: the copy must end up byte for byte like the repository.
GENERATED = (
    "docs/metrics.md",
    "prometheus/recording.yaml",
    "prometheus/alerts.yaml",
    "deploy/kubernetes/prometheusrule.yaml",
    "grafana/dashboards/sqlalchemy-pools.json",
)
#: What a fresh copy for the generators holds.
COPIED = ("exporter", "scripts", "docs", "prometheus", "grafana", "deploy/kubernetes")


def readme_command(prefix: str) -> readme.Command:
    """The one README command starting with ``prefix``."""
    found = [c for c in readme.commands() if c.text.startswith(prefix)]
    assert len(found) == 1, (
        f"README.md should have exactly one command starting with {prefix!r} (found "
        f"{len(found)}): update the README or the command lists of {Path(__file__).name}"
    )
    return found[0]


def without_comment(command: readme.Command) -> str:
    """The command's shell text without its trailing ``# comment``."""
    return re.sub(r"\s+#\s.*$", "", command.text)


def run_shell(text: str, cwd: Path, env: dict[str, str], timeout: float = 120) -> str:
    """Run one README command line with bash; its output, after checking it succeeded."""
    result = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", text],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert result.returncode == 0, (
        f"the README's `{text}` failed (exit {result.returncode}):\n"
        f"{result.stdout[-2000:]}\n{result.stderr[-2000:]}"
    )
    return result.stdout


# -- install -----------------------------------------------------------------------------


def test_the_wheel_the_readme_installs_is_the_one_the_build_makes(image_venv: ImageVenv) -> None:
    # The wheel's name depends on the platform when the compiled ledger is in it: the
    # README names it by a pattern, which must match what the build makes here.
    install = readme_command('pip install "$(ls dist/')
    found = re.fullmatch(r'pip install "\$\(ls dist/([^)\s]+)\)\[sidecar\]"', install.text)
    assert found, f"README.md:{install.line}: {install.text!r}"
    assert fnmatch.fnmatchcase(image_venv.wheel.name, found[1]), (
        f"README.md:{install.line} installs {found[1]}, the build makes {image_venv.wheel.name}"
    )
    assert image_venv.wheel.name.startswith("sqlalchemy_pool_exporter-0.1.0-")
    # The image's build stage runs the README's two install commands, so the fixture
    # that built this wheel and its virtualenv ran them.
    (build,) = read_dockerfile()[0].all("RUN")
    assert "pip wheel --no-deps --wheel-dir" in build
    assert readme_command("pip wheel --no-deps --wheel-dir dist .")
    assert re.search(r'pip install "\$\(ls /wheels/\*\.whl\)\[sidecar\]"', build)


def test_help_lists_every_command_the_readme_shows(image_venv: ImageVenv, tmp_path: Path) -> None:
    out = run_shell("sqlalchemy-pool-exporter --help", tmp_path, image_venv.env())
    for command in ("serve", "status", "demo", "assets", "run"):
        assert re.search(rf"^\s+{command}\s", out, re.MULTILINE), command


def test_assets_command_as_written(image_venv: ImageVenv, tmp_path: Path) -> None:
    command = readme_command("sqlalchemy-pool-exporter assets --output ./pool-exporter-assets")
    run_shell(command.text, tmp_path, image_venv.env())
    for relative in ("grafana/dashboards/sqlalchemy-pools.json", "prometheus/alerts.yaml"):
        written = tmp_path / "pool-exporter-assets" / relative
        assert written.read_bytes() == (ROOT / relative).read_bytes(), relative


def test_demo_runs_and_status_prints_the_readme_table(
    image_venv: ImageVenv, tmp_path: Path
) -> None:
    demo = subprocess.Popen(
        [
            str(image_venv.bin / "sqlalchemy-pool-exporter"),
            "demo",
            "--duration",
            "8",
            "--port",
            "0",
        ],
        cwd=tmp_path,
        env=image_venv.env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert demo.stdout is not None
        first = demo.stdout.readline() + demo.stdout.readline()
        match = re.search(r"status --url (http://127\.0\.0\.1:\d+)", first)
        assert match, f"the demo should say where status reads from; it printed {first!r}"
        # /api/pools is on the push listener (9188) by default, so status reads it there.
        status = readme_command("sqlalchemy-pool-exporter status --url http://127.0.0.1:9188")
        example = readme.LINES[status.line]  # the table header printed under it
        text = status.text.replace("http://127.0.0.1:9188", match.group(1))
        deadline = time.monotonic() + 20
        while True:  # until a worker has pushed: the table then has the demo's app
            out = run_shell(text, tmp_path, image_venv.env(), timeout=30)
            if "shop" in out or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        header = out.splitlines()[0]
        assert header.split() == example.split(), (
            f"status prints {header!r}; README.md:{status.line + 1} shows {example!r}"
        )
        assert re.search(r"^shop\s", out, re.MULTILINE), out
        rest, _ = demo.communicate(timeout=60)
    finally:
        if demo.poll() is None:
            demo.send_signal(signal.SIGINT)
            demo.wait(timeout=30)
    assert demo.returncode == 0
    assert rest.splitlines()[-1] == "demo: done"


# -- development ------------------------------------------------------------------------


@pytest.fixture()
def fresh_copy(tmp_path: Path) -> Path:
    """The parts of the repository the generators read and write, copied."""
    copy = tmp_path / "repo"
    for name in COPIED:
        shutil.copytree(
            ROOT / name,
            copy / name,
            ignore=shutil.ignore_patterns("node_modules", "__pycache__", "generated"),
        )
    return copy


def test_generator_commands_run_as_written_and_change_nothing(fresh_copy: Path) -> None:
    require_binary("promtool")
    env = {k: v for k, v in os.environ.items() if not k.startswith("POOL_EXPORTER_")}
    # `python` is this environment's: the README's [test] extra, PyYAML included.
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    for prefix in GENERATORS:
        command = readme_command(prefix)
        run_shell(without_comment(command), fresh_copy, env)
    stale = [
        relative
        for relative in GENERATED
        if (fresh_copy / relative).read_bytes() != (ROOT / relative).read_bytes()
    ]
    assert not stale, (
        f"the README's generator commands rewrite {stale}: regenerate and commit them, "
        "or fix the commands"
    )
