"""Acceptance: servers that end their workers without ``atexit`` still lose no count.

Real uvicorn (single process and ``--workers``), gunicorn with uvicorn's worker class
(with and without ``--preload``) and a Celery prefork worker on Redis (children recycled
by ``--max-tasks-per-child`` mid-run) push to a real sidecar at the default 5 s interval.
After N requests or tasks a SIGTERM ends each of them gracefully; once the whole process
tree is gone the sidecar must hold exactly N checkouts, and every process must have
retired by its final push — none live, none expired — and the server's own exit status
must be the one it has without the exporter.
"""

from __future__ import annotations

import sys
import urllib.error
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import celery
import pytest
import redis
import uvicorn  # noqa: F401  (a missing uvicorn or worker class must fail, not skip)
import uvicorn_worker  # noqa: F401

from tests.integration.conftest import RunningSidecar
from tests.integration.exit_harness import (
    Program,
    assert_retired,
    processes,
    push_env,
    require_redis,
)
from tests.integration.servers import free_port, isolation_flags

pytestmark = [pytest.mark.integration, pytest.mark.slow]
REQUESTS = 300
ASGI_APP = "tests.integration.asgi_app:app"


def serve(
    programs: list[Program], sc: RunningSidecar, tmp: Path, app: str, args: list[str]
) -> tuple[Program, int]:
    """Start ``python -m <args>`` serving the ASGI test app on a free port."""
    port = free_port()
    env = push_env(sc.push_url, app, ASGI_APP_DB=str(tmp / "app.db"))
    argv = [sys.executable, "-m", *[a.replace("{port}", str(port)) for a in args]]
    program = Program(argv, env, tmp / "server.log")
    programs.append(program)
    return program, port


def drive(port: int, n: int) -> None:
    """``n`` requests from 4 client threads, each answered 200 by the app."""

    def get(_: int) -> None:
        url = f"http://127.0.0.1:{port}/healthy"
        with urllib.request.urlopen(url, timeout=10) as response:
            assert response.status == 200
            response.read()

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(get, range(n)))


def wait_for(sc: RunningSidecar, app: str, program: Program, live: int, port: int = 0) -> None:
    """Until ``live`` processes have pushed (the app is imported) and ``port`` answers."""

    def answers() -> bool:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/ready", timeout=2)
        except urllib.error.HTTPError:
            return True  # a 404 from the app, which makes no checkout for it
        except OSError:
            return False
        return True

    try:
        sc.wait_until(lambda: processes(sc, app) == live, timeout=20)
        if port:
            sc.wait_until(answers, timeout=10)
    except pytest.fail.Exception:
        pytest.fail(f"{processes(sc, app)} processes, not {live}; log:\n{program.log()}")


@pytest.mark.parametrize(
    ("workers", "status"),
    [
        (1, -15),  # uvicorn re-raises SIGTERM after its graceful shutdown: dies by it
        (2, 0),  # the supervisor stops its workers and returns
    ],
)
def test_uvicorn(
    sidecar: RunningSidecar, tmp_path: Path, programs: list[Program], workers: int, status: int
) -> None:
    app = f"uvicorn-{workers}"
    args = ["uvicorn", "--port", "{port}", "--workers", str(workers), ASGI_APP]
    program, port = serve(programs, sidecar, tmp_path, app, args)
    wait_for(sidecar, app, program, workers, port)
    drive(port, REQUESTS)
    assert program.stop() == status, program.log()
    assert "Finished server process" in program.log(50)
    assert_retired(sidecar, app, REQUESTS)


@pytest.mark.parametrize("preload", [False, True])
def test_gunicorn_uvicorn_worker(
    sidecar: RunningSidecar, tmp_path: Path, programs: list[Program], preload: bool
) -> None:
    app = f"gunicorn-uvicorn-{preload}"
    args = ["gunicorn", "-b", "127.0.0.1:{port}", "-w", "2", "-k", "uvicorn_worker.UvicornWorker"]
    args += [*isolation_flags(), *(["--preload"] if preload else []), ASGI_APP]
    program, port = serve(programs, sidecar, tmp_path, app, args)
    wait_for(sidecar, app, program, 3 if preload else 2, port)  # a preloading master pushes
    drive(port, REQUESTS)
    assert program.stop() == 0, program.log()
    assert_retired(sidecar, app, REQUESTS)


def test_celery_prefork_recycling_and_shutdown(
    sidecar: RunningSidecar, tmp_path: Path, programs: list[Program]
) -> None:
    require_redis()
    queue = f"exit-test-{uuid.uuid4().hex}"
    url = "redis://127.0.0.1:6379/13"  # this test's database; only its own keys are removed
    app = "celery-prefork"
    db = str(tmp_path / "app.db")
    env = push_env(
        sidecar.push_url, app, CELERY_APP_DB=db, CELERY_APP_REDIS=url, CELERY_APP_QUEUE=queue
    )
    argv = [sys.executable, "-m", "celery", "-A", "tests.integration.celery_app", "worker"]
    argv += ["-P", "prefork", "-c", "2", "--max-tasks-per-child", "50", "-Q", queue]
    argv += ["-n", f"{queue}@localhost", "--without-heartbeat", "--without-gossip"]
    argv += ["--without-mingle", "--loglevel", "INFO"]
    program = Program(argv, env, tmp_path / "celery.log")
    programs.append(program)
    client = celery.Celery("exit-test-client", broker=url, backend=url)
    results = []
    try:
        wait_for(sidecar, app, program, 3)  # the main process and two children
        results = [client.send_task("exit_test.checkout", queue=queue) for _ in range(REQUESTS)]
        pids = {r.get(timeout=30) for r in results}
        assert len(pids) >= REQUESTS // 50  # each child ran 50 at most: recycled mid-run
        assert program.stop() == 0, program.log()
        assert "Warm shutdown" in program.log(50)
        assert_retired(sidecar, app, REQUESTS)
    finally:
        store = redis.Redis.from_url(url)
        mine = [f"celery-task-meta-{r.id}" for r in results] + list(store.scan_iter(f"*{queue}*"))
        for i in range(0, len(mine), 500):
            store.delete(*mine[i : i + 500])
        store.close()
