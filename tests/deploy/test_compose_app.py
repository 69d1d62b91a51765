"""The compose stack's example app, run for real without containers.

PostgreSQL (a throwaway cluster, initialised with the stack's ``init.sql``), the sidecar
(``serve`` with the compose service's environment) and the app under gunicorn with the
stack's ``gunicorn.conf.py`` (4 worker processes), each configured from compose.yaml
with only the host names and ports swapped for local ones. It proves that the workers
push with the shared token, that the sidecar adds the 4 processes up, and that the
probe's role from ``init.sql`` can read the server.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg2
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import IN_CI
from tests.deploy.tools import COMPOSE_DIR, ROOT
from tests.integration.pgcluster import PgCluster, find_bindir
from tests.sidecar_log import watch_listening

pytestmark = [pytest.mark.integration, pytest.mark.slow]

COMPOSE = yaml.safe_load((COMPOSE_DIR / "compose.yaml").read_text())["services"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _local(url: str, port: int) -> str:
    return url.replace("@postgres:5432/", f"@127.0.0.1:{port}/")


@pytest.fixture(scope="module")
def shop_db() -> Iterator[PgCluster]:
    """PostgreSQL as the compose stack starts it: max_connections 60, init.sql applied."""
    bindir = find_bindir()
    if bindir is None:
        message = "PostgreSQL server binaries (initdb, pg_ctl, postgres) not found"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    env = COMPOSE["postgres"]["environment"]
    cluster = PgCluster(bindir, max_connections=60, reserved_connections=3)
    try:
        cluster.init()
        cluster.start()
        with cluster.admin() as cur:  # what the postgres image does with POSTGRES_*
            cur.execute(f'CREATE ROLE "{env["POSTGRES_USER"]}" LOGIN SUPERUSER')
            cur.execute(f'CREATE DATABASE "{env["POSTGRES_DB"]}" OWNER "{env["POSTGRES_USER"]}"')
        conn = psycopg2.connect(
            host="127.0.0.1",
            port=cluster.port,
            user=env["POSTGRES_USER"],
            dbname=env["POSTGRES_DB"],
        )
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute((COMPOSE_DIR / "postgres" / "init.sql").read_text())
        conn.close()
        yield cluster
    finally:
        cluster.destroy()


class Sidecar:
    """A ``serve`` subprocess with the compose sidecar's environment."""

    def __init__(self, db_port: int, state_dir: str) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("POOL_EXPORTER_")}
        env.update(COMPOSE["sidecar"]["environment"])
        env["POOL_EXPORTER_LISTEN"] = "127.0.0.1:0"
        env["POOL_EXPORTER_PUSH_LISTEN"] = "127.0.0.1:0"
        env["POOL_EXPORTER_DATABASE_URL"] = _local(env["POOL_EXPORTER_DATABASE_URL"], db_port)
        env["POOL_EXPORTER_PROBE_INTERVAL"] = "1"
        # The container's volume path, not this machine's.
        env["POOL_EXPORTER_STATE_DIR"] = state_dir
        # Silent processes would expire only after 100 intervals: a worker that vanishes
        # sooner was retired by its final push at exit.
        env["POOL_EXPORTER_EXPIRY_FACTOR"] = "100"
        env["PYTHONPATH"] = str(ROOT)
        self.process = subprocess.Popen(
            [sys.executable, "-m", "sqlalchemy_pool_exporter", "serve"],
            env=env,
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert self.process.stderr is not None
        found, _ = watch_listening(self.process.stderr)
        assert found, "sidecar did not start"
        self.metrics_url: str = found["metrics"]
        self.push_url: str = found["push"]

    def samples(self, name: str) -> dict[frozenset[tuple[str, str]], float]:
        """Every sample ``name`` on /metrics, by labels."""
        with urllib.request.urlopen(self.metrics_url + "/metrics", timeout=10) as response:
            text = response.read().decode()
        return {
            frozenset(s.labels.items()): s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
            if s.name == name
        }

    def value(self, name: str, **labels: str) -> float | None:
        """One sample's value, or None."""
        return self.samples(name).get(frozenset(labels.items()))


def _wait(predicate: Any, timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = predicate()
        if result:
            return result
        time.sleep(0.2)
    pytest.fail("condition not met in time")


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=30) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def test_four_gunicorn_workers_push_to_the_sidecar_and_the_probe_reads_the_server(
    shop_db: PgCluster, tmp_path: Path
) -> None:
    sidecar = Sidecar(shop_db.port, str(tmp_path / "state"))
    app_port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("POOL_EXPORTER_")}
    env.update(COMPOSE["app"]["environment"])
    env["DATABASE_URL"] = _local(env["DATABASE_URL"], shop_db.port)
    env["POOL_EXPORTER_PUSH_URL"] = sidecar.push_url
    env["POOL_EXPORTER_PUSH_INTERVAL"] = "1"
    env["PYTHONPATH"] = str(ROOT)
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    gunicorn = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gunicorn",
            "--config",
            "gunicorn.conf.py",
            "--bind",
            f"127.0.0.1:{app_port}",
            "shop:application",
        ],
        cwd=COMPOSE_DIR / "app",
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=open(tmp_path / "gunicorn.log", "w"),  # noqa: SIM115 - closed with the process
    )
    app = f"http://127.0.0.1:{app_port}"
    try:
        _wait(lambda: _get_quietly(app + "/healthz") == (200, "ok\n"))
        labels = {"app": "shop", "pool": "shop"}
        _wait(lambda: sidecar.value("sqlalchemy_pool_processes", **labels) == 4)

        for _ in range(20):
            status, body = _get(app + "/")
            assert status == 200 and body.endswith(" orders\n"), body
        for _ in range(2):
            status, body = _get(app + "/report")
            assert status == 200 and body.startswith("revenue "), body
        assert _get(app + "/leak") == (200, "leaked one connection\n")
        assert _get(app + "/nope") == (404, "not found\n")

        # 23 checkouts across the 4 workers, one connection still held by the leak. A push
        # taken mid-request counts a checkout before its checkin: wait for the next ones.
        _wait(lambda: sidecar.value("sqlalchemy_pool_checkouts_total", **labels) == 23)
        _wait(
            lambda: sidecar.value("sqlalchemy_pool_connections", state="checked_out", **labels) == 1
        )
        assert sidecar.value("sqlalchemy_pool_max_connections", **labels) == 4 * (5 + 5)
        # The probe logs in with the role init.sql created and sees the whole server.
        _wait(lambda: sidecar.value("sqlalchemy_pool_db_up", database="shop") == 1)
        assert sidecar.value("sqlalchemy_pool_db_max_connections", database="shop") == 60

        # The load generator drives the app on its own.
        loadgen_env = dict(env, LOADGEN_TARGET=app, LOADGEN_CONCURRENCY="2")
        loadgen = subprocess.Popen(
            [sys.executable, "loadgen.py"],
            cwd=COMPOSE_DIR / "app",
            env=loadgen_env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            _wait(lambda: (sidecar.value("sqlalchemy_pool_checkouts_total", **labels) or 0) > 43)
        finally:
            loadgen.kill()
            loadgen.wait(10)

        # gunicorn stops its workers; each sends a final push at exit and is retired at
        # once, its counts kept in the totals.
        before = sidecar.value("sqlalchemy_pool_checkouts_total", **labels) or 0
        gunicorn.terminate()
        assert gunicorn.wait(30) == 0
        _wait(
            lambda: sidecar.value("sqlalchemy_pool_processes", **labels) in (None, 0.0), timeout=10
        )
        assert (sidecar.value("sqlalchemy_pool_checkouts_total", **labels) or 0) >= before
    finally:
        if gunicorn.poll() is None:
            gunicorn.kill()
            gunicorn.wait(10)
        sidecar.process.terminate()
        sidecar.process.wait(15)


def _get_quietly(url: str) -> tuple[int, str] | None:
    try:
        return _get(url)
    except OSError:
        return None
