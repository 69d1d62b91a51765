"""gunicorn ``--preload -w 3`` with the exporter's hooks and prometheus_client multiprocess mode.

* Without a sidecar, the app's multiprocess ``/metrics`` cannot show pool metrics: the
  exporter says so in one line, once (the preloading master instruments once).
* With one, ``post_fork`` gives each worker a fresh pool: no worker ever talks over the
  master's PostgreSQL connection or another worker's, the sidecar's counts are exact,
  and ``worker_exit`` retires every worker at shutdown without waiting for expiry.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import pytest

from tests.integration.conftest import RunningSidecar
from tests.integration.frameworks.conftest import HERE, app_env, drive, http_get, wait_http
from tests.integration.pgcluster import PgCluster
from tests.integration.servers import ServerProcess, free_port, gunicorn_command

pytestmark = [pytest.mark.integration, pytest.mark.slow]
MULTIPROCESS_LINE = (
    "pool metrics are not in this app's /metrics: prometheus_client multiprocess mode "
    "(PROMETHEUS_MULTIPROC_DIR) serves only its own files fix='multi-process apps: run the "
    "sidecar (sqlalchemy-pool-exporter serve) and set POOL_EXPORTER_PUSH_URL in the app'"
)


def start(pg: PgCluster, tmp_path: Path, push_url: str | None) -> tuple[ServerProcess, str]:
    port = free_port()
    metrics_dir = tmp_path / "prometheus-multiproc"
    metrics_dir.mkdir()
    server = ServerProcess(
        gunicorn_command(
            "multiproc_app:app", port, "-w", "3", "-c", str(HERE / "gunicorn_conf.py")
        ),
        app_env(
            push_url,
            MULTIPROC_APP_DB=pg.url("psycopg2"),
            PROMETHEUS_MULTIPROC_DIR=str(metrics_dir),
            POOL_EXPORTER_APP="shop",
        ),
        tmp_path / "gunicorn.log",
    )
    base = f"http://127.0.0.1:{port}"
    wait_http(server, base + "/metrics")
    return server, base


def test_without_a_sidecar_multiprocess_mode_is_named_once(
    pg: PgCluster, servers: list[ServerProcess], tmp_path: Path
) -> None:
    server, base = start(pg, tmp_path, push_url=None)
    servers.append(server)
    drive(base, ["/backend"] * 9)
    metrics = http_get(base + "/metrics")
    assert "\napp_requests_total 11.0\n" in metrics  # the app's own: 1 + 9 + this one
    assert "sqlalchemy_pool_" not in metrics
    assert server.log().splitlines().count(MULTIPROCESS_LINE) == 1


def test_preloaded_workers_get_their_own_connections_and_exact_counts(
    pg: PgCluster, sidecar: RunningSidecar, servers: list[ServerProcess], tmp_path: Path
) -> None:
    server, base = start(pg, tmp_path, push_url=sidecar.push_url)
    servers.append(server)
    labels = {"app": "shop", "pool": "main"}

    def value(name: str) -> float | None:
        return sidecar.value(name, **labels)

    server.wait_until(sidecar, lambda: value("sqlalchemy_pool_processes") == 4)  # + master
    answers = [json.loads(b) for b in drive(base, ["/backend"] * 30)]
    backends: dict[int, set[int]] = defaultdict(set)
    for answer in answers:
        backends[answer["pid"]].add(answer["backend"])
    # A sync worker holds one connection at a time: exactly one backend each, its own.
    assert all(len(b) == 1 for b in backends.values()), backends
    used = set().union(*backends.values())
    assert len(used) == len(backends)
    assert answers[0]["master_backend"] not in used
    server.wait_until(sidecar, lambda: value("sqlalchemy_pool_checkouts_total") == 30)
    assert value("sqlalchemy_pool_connections_created_total") == len(used)
    assert MULTIPROCESS_LINE not in server.log()  # pushing: nothing is missing

    assert server.stop() == 0
    assert value("sqlalchemy_pool_processes") == 0  # worker_exit / atexit final pushes
    assert value("sqlalchemy_pool_checkouts_total") == 30
    assert sidecar.value("pool_exporter_processes_expired_total") == 0
