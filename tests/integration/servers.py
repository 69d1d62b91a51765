"""App processes an integration test starts: their environment, gunicorn, their logs.

* :func:`push_env` — the environment of an app that pushes to a sidecar: no inherited
  ``POOL_EXPORTER_*`` (a developer's shell must not change what a test sees), the given
  push URL, interval and app label, and this repository importable.
* :func:`gunicorn_command` — ``python -m gunicorn`` on a port of 127.0.0.1, with
  :func:`isolation_flags` so that concurrent masters do not clash.
* :class:`ServerProcess` — a command (gunicorn, uvicorn, celery) in its own process group,
  its output in a log file (shown when a test fails), stopped with SIGTERM; the
  ``servers`` fixture (``tests/integration/conftest.py``) stops what a test started.
"""

from __future__ import annotations

import contextlib
import functools
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, Any

import pytest

from tests.integration.pgcluster import free_port as free_port
from tests.sidecars import ROOT, RunningSidecar


def push_env(
    push_url: str | None,
    interval: float,
    app: str | None = None,
    pythonpath: Sequence[Path] = (ROOT,),
    **extra: str,
) -> dict[str, str]:
    """This environment without POOL_EXPORTER_*, pushing to ``push_url`` every ``interval`` s."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("POOL_EXPORTER_")}
    env["PYTHONPATH"] = os.pathsep.join(str(p) for p in pythonpath)
    env["POOL_EXPORTER_PUSH_INTERVAL"] = str(interval)
    if push_url is not None:
        env["POOL_EXPORTER_PUSH_URL"] = push_url
    if app is not None:
        env["POOL_EXPORTER_APP"] = app
    env.update(extra)
    return env


@functools.cache
def isolation_flags() -> tuple[str, ...]:
    """gunicorn ≥ 25 shares one control socket per user: concurrent masters would clash."""
    help_text = subprocess.run(
        [sys.executable, "-m", "gunicorn", "--help"], capture_output=True, text=True, check=True
    ).stdout
    return ("--no-control-socket",) if "--no-control-socket" in help_text else ()


def gunicorn_command(app: str, port: int, *flags: str, preload: bool = True) -> list[str]:
    """gunicorn serving ``app`` on 127.0.0.1:``port``.

    With ``preload`` (the tests' usual master): ``--preload`` and a 5 s graceful shutdown.
    """
    usual = ("--preload", "--graceful-timeout", "5") if preload else ()
    return [
        *(sys.executable, "-m", "gunicorn", *usual, "-b", f"127.0.0.1:{port}"),
        *isolation_flags(),
        *flags,
        app,
    ]


def launch(
    args: list[str], env: dict[str, str], log_path: Path
) -> tuple[subprocess.Popen[bytes], IO[str]]:
    """Start ``args`` in a session (process group) of its own, output into ``log_path``."""
    log = open(log_path, "w")  # noqa: SIM115  (the caller closes it)
    proc = subprocess.Popen(
        args, env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    return proc, log


class ServerProcess:
    """A server command in its own process group, logging to a file."""

    def __init__(self, args: list[str], env: dict[str, str], log_path: Path) -> None:
        self.log_path = log_path
        self.proc, self._log = launch(args, env, log_path)

    def log(self) -> str:
        """Everything the server has written so far."""
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(errors="replace")

    def wait_until(
        self, sc: RunningSidecar, predicate: Callable[[], Any], timeout: float = 20.0
    ) -> Any:
        """Poll ``predicate`` via ``sc``; on failure show the server's log tail."""
        if self.proc.poll() is not None:
            pytest.fail(f"server exited with {self.proc.returncode}:\n{self.log()[-3000:]}")
        try:
            return sc.wait_until(predicate, timeout=timeout)
        except pytest.fail.Exception:
            pytest.fail(f"condition not met; server log tail:\n{self.log()[-3000:]}")

    def stop(self, timeout: float = 20.0) -> int:
        """SIGTERM to the main process; wait; kill the whole group if it lingers."""
        if self._log.closed:
            return int(self.proc.returncode)
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        # workers that outlived their master (they should not): no leftovers
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self._log.close()
        return int(self.proc.returncode)
