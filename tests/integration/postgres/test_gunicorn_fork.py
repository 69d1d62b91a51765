"""Acceptance: gunicorn ``--preload`` whose master queried PostgreSQL before forking.

Real gunicorn (3 sync workers) serving :mod:`.gunicorn_fork_app`, real PostgreSQL, a
real sidecar. Without ``post_fork`` every worker that serves a request uses the
master's connection — one server backend behind all of them — and says so: the
inherited-connection counter and one warning per worker. With
``engine.dispose(close=False)`` in ``post_fork`` (:mod:`.gunicorn_fork_conf`) nothing is
counted or logged. Either way the capacity series are the workers' limits only: the
master lends its pool to the workers and serves nothing itself.
"""

from __future__ import annotations

import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import gunicorn  # noqa: F401  (a missing gunicorn must fail, not skip)
import pytest

from tests.integration.conftest import RunningSidecar
from tests.integration.pgcluster import PgCluster
from tests.integration.servers import ServerProcess, free_port, gunicorn_command, push_env

pytestmark = [pytest.mark.integration, pytest.mark.slow]
APP = "fork-test"
INTERVAL = 0.5
WORKERS = 3
WARNING = (
    "pooled connection inherited across fork() is in use, sharing its socket with the"
    " parent process: call engine.dispose(close=False) in the child"
    " (e.g. in gunicorn's post_fork)"
)


class ForkApp(ServerProcess):
    """gunicorn --preload with WORKERS sync workers, pushing to ``push_url``."""

    def __init__(self, tmp: Path, pg: PgCluster, push_url: str, *flags: str) -> None:
        self.port = free_port()
        super().__init__(
            gunicorn_command(
                "tests.integration.postgres.gunicorn_fork_app:app",
                self.port,
                "-w",
                str(WORKERS),
                *flags,
            ),
            push_env(
                push_url,
                INTERVAL,
                APP,
                FORK_APP_DB_URL=pg.url("psycopg2", connect_timeout="5", application_name=APP),
            ),
            tmp / "gunicorn.log",
        )

    def query(self) -> tuple[int, int]:
        """One request: (worker pid, PostgreSQL backend pid); fails on any non-200."""
        url = f"http://127.0.0.1:{self.port}/query"
        with urllib.request.urlopen(url, timeout=15) as response:
            assert response.status == 200
            worker, backend = response.read().decode().split()
        return int(worker), int(backend)

    def log_lines(self) -> list[str]:
        return self.log().splitlines()


def value(sc: RunningSidecar, name: str) -> float | None:
    return sc.value(name, app=APP, pool="main")


def wait_ready(sc: RunningSidecar, app: ForkApp) -> None:
    """The master and every worker push; on failure show gunicorn's log."""
    try:
        sc.wait_until(lambda: value(sc, "sqlalchemy_pool_processes") == WORKERS + 1, timeout=30)
    except pytest.fail.Exception:
        pytest.fail("gunicorn log:\n" + "\n".join(app.log_lines()[-15:]))


def settled(sc: RunningSidecar, checkouts: int) -> None:
    """Every request's checkout has reached the sidecar, and two more pushes came after."""
    sc.wait_until(lambda: value(sc, "sqlalchemy_pool_checkouts_total") == checkouts)
    time.sleep(2 * INTERVAL)
    assert value(sc, "sqlalchemy_pool_checkouts_total") == checkouts


def assert_capacity_of_workers_only(sc: RunningSidecar) -> None:
    # 3 workers x (5 + 10) = 45; the master, idle since it forked, adds nothing (not 60).
    sc.wait_until(lambda: value(sc, "sqlalchemy_pool_max_connections") == WORKERS * 15)
    assert value(sc, "sqlalchemy_pool_size") == WORKERS * 5
    assert value(sc, "sqlalchemy_pool_max_overflow") == WORKERS * 10
    assert value(sc, "sqlalchemy_pool_processes") == WORKERS + 1


def test_workers_of_a_preloading_master_share_its_connection_and_say_so(
    tmp_path: Path, pg: PgCluster, sidecar: RunningSidecar, servers: list[ServerProcess]
) -> None:
    app = ForkApp(tmp_path, pg, sidecar.push_url)
    servers.append(app)
    wait_ready(sidecar, app)
    # One request at a time: concurrent ones would interleave on the shared socket.
    served = [app.query() for _ in range(12)]
    workers = {worker for worker, _ in served}
    # Every query ran on one server backend: the master's, behind every worker.
    assert len({backend for _, backend in served}) == 1
    settled(sidecar, 1 + 12)  # the master's query at load time, then the requests
    # Each worker that served used the one inherited connection: counted once per worker.
    assert value(sidecar, "sqlalchemy_pool_fork_inherited_connections_total") == len(workers)
    warnings = [line for line in app.log_lines() if "inherited across fork()" in line]
    assert sorted(warnings) == sorted(f"{WARNING} pool=main pid={pid}" for pid in workers)
    assert_capacity_of_workers_only(sidecar)


def test_dispose_in_post_fork_leaves_nothing_to_count(
    tmp_path: Path, pg: PgCluster, sidecar: RunningSidecar, servers: list[ServerProcess]
) -> None:
    conf = Path(__file__).with_name("gunicorn_fork_conf.py")
    app = ForkApp(tmp_path, pg, sidecar.push_url, "-c", str(conf))
    servers.append(app)
    wait_ready(sidecar, app)
    with ThreadPoolExecutor(4) as pool:
        served = list(pool.map(lambda _: app.query(), range(24)))
    assert len(served) == 24
    settled(sidecar, 1 + 24)
    assert value(sidecar, "sqlalchemy_pool_fork_inherited_connections_total") == 0
    assert not [line for line in app.log_lines() if "inherited across fork()" in line]
    assert_capacity_of_workers_only(sidecar)
