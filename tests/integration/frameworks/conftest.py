"""Real servers and workers for the framework integration tests.

* :class:`ServerProcess` — a command (uvicorn, gunicorn, celery) started with a clean
  ``POOL_EXPORTER_*`` environment, its output in a log file (shown when a test fails),
  stopped with SIGTERM after the test.
* ``pg`` — one throwaway PostgreSQL cluster for the package (``pgcluster.py``).
* :func:`drive` — real HTTP requests from a few client threads, each answer's body kept.
* :func:`require_redis` — Redis at 127.0.0.1:6379, or a skip (a failure in CI).

App modules live beside the tests and are imported by the servers from this directory
(``--app-dir``/``--pythonpath``), so their import name — and with it the default
``app`` label — is the module's own (``fastapi_app``, ``flask_app``, ``celery_app``).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import IN_CI
from tests.integration.conftest import ROOT, RunningSidecar
from tests.integration.pgcluster import PgCluster, throwaway_cluster

HERE = Path(__file__).resolve().parent
INTERVAL = 0.5  # push interval of every app here


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def app_env(push_url: str | None, **extra: str) -> dict[str, str]:
    """The environment of a server: no inherited POOL_EXPORTER_*, this repo importable."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("POOL_EXPORTER_")}
    env["PYTHONPATH"] = os.pathsep.join([str(HERE), str(ROOT)])
    env["POOL_EXPORTER_PUSH_INTERVAL"] = str(INTERVAL)
    if push_url is not None:
        env["POOL_EXPORTER_PUSH_URL"] = push_url
    env.update(extra)
    return env


class ServerProcess:
    """A server command in its own process group, logging to a file."""

    def __init__(self, args: list[str], env: dict[str, str], log_path: Path) -> None:
        self.log_path = log_path
        self._log = open(log_path, "w")  # noqa: SIM115  (closed in stop())
        self.proc = subprocess.Popen(
            args,
            env=env,
            cwd=ROOT,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

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


@pytest.fixture
def servers() -> Iterator[list[ServerProcess]]:
    """Servers a test starts; all stopped afterwards."""
    started: list[ServerProcess] = []
    yield started
    for server in started:
        server.stop()


def http_get(url: str) -> str:
    """Body of one GET that must answer 200."""
    with urllib.request.urlopen(url, timeout=15) as response:
        assert response.status == 200
        return response.read().decode()


def drive(base: str, paths: list[str], threads: int = 4) -> list[str]:
    """GET every path from ``threads`` client threads; the bodies, in order."""
    with ThreadPoolExecutor(threads) as pool:
        return list(pool.map(lambda p: http_get(base + p), paths))


def wait_http(server: ServerProcess, url: str, timeout: float = 30.0) -> None:
    """Poll ``url`` until it answers (the server is up) or fail with the server's log."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            http_get(url)
            return
        except OSError:
            if server.proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"{url} never answered; server log:\n{server.log()[-3000:]}")
            time.sleep(0.1)


@pytest.fixture(scope="package")
def pg() -> Iterator[PgCluster]:
    """One throwaway PostgreSQL server for the framework tests."""
    with throwaway_cluster(max_connections=40, reserved_connections=3) as cluster:
        yield cluster


def require_redis() -> None:
    """Redis answers at 127.0.0.1:6379, or skip (fail in CI)."""
    try:
        with socket.create_connection(("127.0.0.1", 6379), timeout=2) as s:
            s.sendall(b"PING\r\n")
            if s.recv(16).startswith(b"+PONG"):
                return
    except OSError:
        pass
    message = "Redis is not reachable at 127.0.0.1:6379"
    if IN_CI:
        pytest.fail(message + " (CI must run every integration test)")
    pytest.skip(message)
