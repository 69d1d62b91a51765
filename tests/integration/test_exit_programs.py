"""Acceptance: plain programs lose no count when they end, and end as they would without us.

:mod:`tests.integration.exit_script` pushes to a real sidecar at the default 5 s
interval: a script ended by SIGTERM (with no handler of its own, or with one installed
before or after ``instrument()``), and ``multiprocessing`` pools whose workers end with
``os._exit`` — after ``close()`` + ``join()``, or recycled by ``maxtasksperchild`` — under
each start method. Once the program has exited the sidecar must hold exactly its
checkouts and every process must have retired by its final push, none expired; its exit
status must be the one it has without the exporter.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.integration.conftest import ROOT, RunningSidecar
from tests.integration.exit_harness import (
    Program,
    assert_retired,
    push_env,
)

pytestmark = [pytest.mark.integration]
CHECKOUTS = 300
SCRIPT = [sys.executable, "-m", "tests.integration.exit_script"]


def status_without_exporter(tmp: Path, handler: str) -> int:
    """The script's exit status on SIGTERM with the exporter in embedded mode (no push)."""
    env = push_env(None, "off", EXIT_SCRIPT_DB=str(tmp / "off.db"))
    with subprocess.Popen(
        [*SCRIPT, "wait", "3", handler], env=env, cwd=ROOT, stdout=subprocess.PIPE, text=True
    ) as proc:
        assert proc.stdout is not None
        assert proc.stdout.readline() == "ready\n"
        proc.terminate()
        return proc.wait(10)


@pytest.mark.parametrize(
    ("handler", "status"),
    [
        ("default", -15),  # no handler of its own: SIGTERM kills it (143 in a shell)
        ("before", 3),  # its own handler, installed before instrument(): sys.exit(3)
        ("after", 3),  # its own handler, installed after instrument(): sys.exit(3)
    ],
)
def test_script_ended_by_sigterm(
    sidecar: RunningSidecar, tmp_path: Path, programs: list[Program], handler: str, status: int
) -> None:
    assert status_without_exporter(tmp_path, handler) == status
    app = f"script-{handler}"
    env = push_env(sidecar.push_url, app, EXIT_SCRIPT_DB=str(tmp_path / "app.db"))
    program = Program([*SCRIPT, "wait", str(CHECKOUTS), handler], env, tmp_path / "out.log")
    programs.append(program)
    sidecar.wait_until(lambda: "ready" in program.log())
    assert program.stop() == status
    assert_retired(sidecar, app, CHECKOUTS)


@pytest.mark.parametrize("start", ["fork", "spawn", "forkserver"])
def test_multiprocessing_pool_workers_retire(
    sidecar: RunningSidecar, tmp_path: Path, programs: list[Program], start: str
) -> None:
    app = f"pool-{start}"
    env = push_env(sidecar.push_url, app, EXIT_SCRIPT_DB=str(tmp_path / "app.db"))
    program = Program([*SCRIPT, "pool", str(CHECKOUTS), start], env, tmp_path / "out.log")
    programs.append(program)
    assert program.wait(20) == 0, program.log()
    assert program.log().splitlines()[-1] == str(CHECKOUTS)
    assert_retired(sidecar, app, CHECKOUTS)


FLUSH = """
import os, sys
from sqlalchemy import create_engine, text
import sqlalchemy_pool_exporter
engine = create_engine("sqlite://")
sqlalchemy_pool_exporter.instrument(engine, name="main", registry=None)
for _ in range(5):
    with engine.connect() as conn:
        conn.execute(text("select 1"))
print(sqlalchemy_pool_exporter.flush(), sqlalchemy_pool_exporter.flush(final=True), flush=True)
os._exit(0)  # a process manager of its own: no atexit
"""


def test_flush_by_hand_before_os_exit(sidecar: RunningSidecar, tmp_path: Path) -> None:
    env = push_env(sidecar.push_url, "by-hand")
    done = subprocess.run(
        [sys.executable, "-c", FLUSH], env=env, cwd=ROOT, capture_output=True, text=True, timeout=30
    )
    assert done.stdout == "True True\n", done.stderr
    assert_retired(sidecar, "by-hand", 5)
    env = push_env(None, "by-hand")  # embedded mode: nothing to flush
    done = subprocess.run(
        [sys.executable, "-c", FLUSH], env=env, cwd=ROOT, capture_output=True, text=True, timeout=30
    )
    assert done.stdout == "False False\n", done.stderr


def test_sigterm_with_a_hung_sidecar_ends_within_the_budget(
    tmp_path: Path, programs: list[Program]
) -> None:
    with socket.socket() as hung:  # accepts connections, never answers
        hung.bind(("127.0.0.1", 0))
        hung.listen(16)
        url = f"http://127.0.0.1:{hung.getsockname()[1]}/v1/push"
        env = push_env(url, "hung", EXIT_SCRIPT_DB=str(tmp_path / "app.db"))
        program = Program([*SCRIPT, "wait", "3", "default"], env, tmp_path / "out.log")
        programs.append(program)
        deadline = time.monotonic() + 15
        while "ready" not in program.log():
            assert time.monotonic() < deadline, program.log()
            time.sleep(0.05)
        started = time.monotonic()
        assert program.stop() == -15
        assert time.monotonic() - started < 1.6  # the exit budget (1 s) and some slack
