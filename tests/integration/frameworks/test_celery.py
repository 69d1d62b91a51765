"""Celery with Redis, pushing to a real sidecar: prefork children, and a threads pool.

``instrument_celery`` instruments in each prefork child (``worker_process_init``), after
giving it a fresh pool: exactly the two children report — the supervising main process
runs no task and does not — their counters equal the tasks run, under the app label of
``celery -A celery_app``, and each child opened its own connection. With ``-P threads``
tasks run in the worker process itself, which is then the one that reports.
"""

from __future__ import annotations

import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from celery import Celery

from tests.integration.conftest import RunningSidecar
from tests.integration.frameworks.conftest import app_env, require_redis
from tests.integration.servers import ServerProcess

pytestmark = [pytest.mark.integration, pytest.mark.slow]
BROKER = "redis://127.0.0.1:6379/0"


@pytest.fixture
def queue() -> Iterator[str]:
    """A queue of this test alone; its keys are deleted from Redis afterwards."""
    require_redis()
    name = f"pool-exporter-test-{uuid.uuid4().hex}"
    yield name
    client = redis.Redis.from_url(BROKER)
    for key in client.scan_iter(match=f"*{name}*"):
        client.delete(key)
    client.close()


@pytest.mark.parametrize(("pool", "reporting"), [("prefork", 2), ("threads", 1)])
def test_processes_that_run_tasks_count_exactly(
    pool: str,
    reporting: int,
    queue: str,
    sidecar: RunningSidecar,
    servers: list[ServerProcess],
    tmp_path: Path,
) -> None:
    worker = ServerProcess(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "celery_app",
            "worker",
            "-P",
            pool,
            "-c",
            "2",
            "-Q",
            queue,
            "-n",
            f"{queue}@%h",
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
            "-l",
            "warning",
        ],
        app_env(
            sidecar.push_url,
            CELERY_TEST_BROKER=BROKER,
            CELERY_TEST_QUEUE=queue,
            CELERY_TEST_DB=str(tmp_path / "tasks.db"),
        ),
        tmp_path / "celery.log",
    )
    servers.append(worker)
    labels = {"app": "celery_app", "pool": "tasks"}

    def value(name: str) -> float | None:
        return sidecar.value(name, **labels)

    worker.wait_until(sidecar, lambda: value("sqlalchemy_pool_processes") == reporting)
    assert value("sqlalchemy_pool_checkouts_total") == 0  # the parent's warm-up is not theirs

    client = Celery("client", broker=BROKER)
    try:
        for _ in range(40):
            client.send_task("celery_app.query", queue=queue)
    finally:
        client.close()
    worker.wait_until(sidecar, lambda: value("sqlalchemy_pool_checkouts_total") == 40)
    assert value("sqlalchemy_pool_use_seconds_count") == 40
    assert value("sqlalchemy_pool_processes") == reporting
    reported = {p["pid"] for p in sidecar.api()["processes"] if p["app"] == "celery_app"}
    assert len(reported) == reporting
    assert (worker.proc.pid in reported) == (pool == "threads")
    if pool == "prefork":
        # Each child opened its own connection (the parent's pooled one was left alone),
        # one at a time: exactly one if it ran a task.
        (data,) = [p for p in sidecar.api()["pools"] if p["app"] == "celery_app"]
        opened = {p["process"]: p["counters"]["connections_created"] for p in data["per_process"]}
        ran = {p["process"]: p["counters"]["checkouts"] > 0 for p in data["per_process"]}
        assert opened == {process: int(busy) for process, busy in ran.items()}
