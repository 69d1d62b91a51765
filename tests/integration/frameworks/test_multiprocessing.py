"""Plain ``multiprocessing``: ``Pool(initializer=child_init)`` children, counted exactly.

Forked children get fresh pools (each opens its own connection, never the parent's) and
send a final push as they exit — ``multiprocessing`` children skip ``atexit`` — so after
the script ends the sidecar holds exact totals with no process left to expire. The app
label is the script's name.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.conftest import ROOT, RunningSidecar
from tests.integration.frameworks.conftest import HERE, app_env

pytestmark = [pytest.mark.integration]


def test_pool_children_retire_with_exact_totals(sidecar: RunningSidecar, tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, str(HERE / "mp_jobs.py"), str(tmp_path / "jobs.db")],
        env=app_env(sidecar.push_url),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    children = json.loads(result.stdout)
    labels = {"app": "mp_jobs", "pool": "jobs"}
    # 30 jobs and the parent's own checkout; each process opened one connection.
    assert sidecar.value("sqlalchemy_pool_checkouts_total", **labels) == 30 + 1
    assert sidecar.value("sqlalchemy_pool_connections_created_total", **labels) == len(children) + 1
    assert sidecar.value("sqlalchemy_pool_processes", **labels) == 0  # all retired by a push
    assert sidecar.value("pool_exporter_processes_expired_total") == 0
    assert sidecar.value("pool_exporter_pushes_total", result="rejected") == 0
