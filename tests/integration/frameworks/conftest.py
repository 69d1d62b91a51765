"""Real servers and workers for the framework integration tests.

* :func:`app_env` — a server's environment: a clean ``POOL_EXPORTER_*`` set, the app
  modules here importable; servers run as ``ServerProcess`` (``tests/integration/servers.py``),
  stopped with SIGTERM after the test (the ``servers`` fixture).
* ``pg`` — one throwaway PostgreSQL cluster for the package (``pgcluster.py``).
* :func:`drive` — real HTTP requests from a few client threads, each answer's body kept.
* :func:`require_redis` — Redis at 127.0.0.1:6379, or a skip (a failure in CI).

App modules live beside the tests and are imported by the servers from this directory
(``--app-dir``/``--pythonpath``), so their import name — and with it the default
``app`` label — is the module's own (``fastapi_app``, ``flask_app``, ``celery_app``).
"""

from __future__ import annotations

import socket
import time
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.conftest import IN_CI
from tests.integration.conftest import ROOT
from tests.integration.pgcluster import PgCluster, throwaway_cluster
from tests.integration.servers import ServerProcess, push_env

HERE = Path(__file__).resolve().parent
INTERVAL = 0.5  # push interval of every app here


def app_env(push_url: str | None, **extra: str) -> dict[str, str]:
    """The environment of a server: no inherited POOL_EXPORTER_*, this repo importable."""
    return push_env(push_url, INTERVAL, pythonpath=(HERE, ROOT), **extra)


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
