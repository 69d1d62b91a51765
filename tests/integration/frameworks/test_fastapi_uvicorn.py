"""FastAPI + asyncpg under ``uvicorn --workers 2``, pushing to a real sidecar.

Each worker is a fresh interpreter (uvicorn spawns them) whose lifespan instruments the
engine: the sidecar sees exactly two processes, and its counters equal the requests
served, under the app label uvicorn's command line names (``fastapi_app``).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from tests.integration.conftest import RunningSidecar
from tests.integration.frameworks.conftest import HERE, app_env, drive, wait_http
from tests.integration.pgcluster import PgCluster
from tests.integration.servers import ServerProcess, free_port

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_uvicorn_workers_count_exactly(
    pg: PgCluster, sidecar: RunningSidecar, servers: list[ServerProcess], tmp_path: Path
) -> None:
    port = free_port()
    server = ServerProcess(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "--app-dir",
            str(HERE),
            "--workers",
            "2",
            "--port",
            str(port),
            "--log-level",
            "warning",
            "fastapi_app:app",
        ],
        app_env(sidecar.push_url, FASTAPI_APP_DB=pg.url("asyncpg")),
        tmp_path / "uvicorn.log",
    )
    servers.append(server)
    base = f"http://127.0.0.1:{port}"
    labels = {"app": "fastapi_app", "pool": "main"}

    def processes() -> float | None:
        return sidecar.value("sqlalchemy_pool_processes", **labels)

    server.wait_until(sidecar, lambda: processes() == 2)  # both lifespans ran
    wait_http(server, base + "/pid")
    answers = [json.loads(body) for body in drive(base, ["/query"] * 60 + ["/pid"] * 20)]
    assert [a.get("value") for a in answers[:60]] == [1] * 60

    def checkouts() -> float | None:
        return sidecar.value("sqlalchemy_pool_checkouts_total", **labels)

    server.wait_until(sidecar, lambda: checkouts() == 60)
    assert sidecar.value("sqlalchemy_pool_wait_seconds_count", **labels) == 60
    assert sidecar.value("sqlalchemy_pool_max_connections", **labels) == 2 * (3 + 2)
    assert processes() == 2
    info = sidecar.series("sqlalchemy_pool_info")
    (info_labels,) = [dict(k) for k in info if dict(k)["app"] == "fastapi_app"]
    assert (info_labels["dialect"], info_labels["driver"]) == ("postgresql", "asyncpg")
    pids = {p["pid"] for p in sidecar.api()["processes"] if p["app"] == "fastapi_app"}
    assert len(pids) == 2 and {a["pid"] for a in answers} <= pids
