"""Harness of the process-exit tests: run a real program that pushes, end it, check it retired.

Every program runs with push mode on and the DEFAULT push interval (5 s), so a process
that ends without its final push shows: its last counts are missing and it stays live
until it expires 15 s later. :func:`assert_retired` reads the sidecar right after the
program's whole process tree has exited — no waiting — and wants exact counts, no live
process and no expiry. :class:`Program` starts each program in its own session so a
failing test never leaves a worker behind (fixture ``programs`` in ``conftest``).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.conftest import IN_CI
from tests.integration.servers import launch

if TYPE_CHECKING:
    from tests.integration.conftest import RunningSidecar

ROOT = Path(__file__).resolve().parents[2]
POOL = "main"


class Program:
    """A program under test: its own session (process group), output in a log file."""

    def __init__(self, args: list[str], env: dict[str, str], log: Path) -> None:
        self.log_path = log
        self.proc, self._log = launch(args, env, log)

    def log(self, lines: int = 20) -> str:
        """The last ``lines`` of its output."""
        self._log.flush()
        return "\n".join(self.log_path.read_text().splitlines()[-lines:])

    def stop(self, timeout: float = 15) -> int:
        """SIGTERM to the program (its main process only, as a process manager does)."""
        self.proc.send_signal(signal.SIGTERM)
        return self.wait(timeout)

    def wait(self, timeout: float = 15) -> int:
        """Its exit status; fails (showing its log) if it does not end in time."""
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            pytest.fail(f"{self.proc.args[2:5]} did not end in {timeout} s:\n{self.log()}")

    def kill(self) -> None:
        """SIGKILL to everything left of its process group."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(5)
        self._log.close()


def push_env(push_url: str | None, app: str, **extra: str) -> dict[str, str]:
    """Environment of a program pushing to ``push_url`` as ``app`` at the default interval.

    Without a URL the exporter runs embedded-only: no pusher, no exit hooks.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("POOL_EXPORTER_")}
    env.update(POOL_EXPORTER_APP=app, PYTHONPATH=str(ROOT), **extra)
    if push_url is not None:
        env["POOL_EXPORTER_PUSH_URL"] = push_url
    return env


def checkouts(sc: RunningSidecar, app: str) -> float | None:
    return sc.value("sqlalchemy_pool_checkouts_total", app=app, pool=POOL)


def processes(sc: RunningSidecar, app: str) -> float | None:
    return sc.value("sqlalchemy_pool_processes", app=app, pool=POOL)


def assert_retired(sc: RunningSidecar, app: str, total: int) -> None:
    """Exactly ``total`` checkouts, and every process retired by its final push (now)."""
    assert checkouts(sc, app) == total
    assert sc.value("sqlalchemy_pool_wait_seconds_count", app=app, pool=POOL) == total
    assert processes(sc, app) == 0
    assert sc.value("pool_exporter_processes") == 0
    assert sc.value("pool_exporter_processes_expired_total") == 0
    assert sc.value("pool_exporter_pushes_total", result="rejected") == 0


def require_redis(host: str = "127.0.0.1", port: int = 6379) -> None:
    """Skip when Redis is not reachable; in CI, fail."""
    try:
        socket.create_connection((host, port), timeout=2).close()
    except OSError as exc:
        message = f"Redis not reachable at {host}:{port} ({exc})"
        if IN_CI:
            pytest.fail(message + " (CI must run every integration test)")
        pytest.skip(message)
