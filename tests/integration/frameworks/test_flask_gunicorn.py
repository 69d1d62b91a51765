"""Flask-SQLAlchemy with two binds in an app factory, under ``gunicorn --preload -w 3``.

The extension instruments both binds in each worker at its first request (no app
context at import, none needed from the user); the preloading master, which created
the tables, serves nothing and reports nothing. Counts per bind equal the requests that
read it; at shutdown every worker's final push retires it, so none has to expire.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.integration.conftest import RunningSidecar
from tests.integration.frameworks.conftest import HERE, app_env, drive, wait_http
from tests.integration.servers import ServerProcess, free_port, gunicorn_command

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_flask_sqlalchemy_binds_under_preloading_gunicorn(
    sidecar: RunningSidecar, servers: list[ServerProcess], tmp_path: Path
) -> None:
    port = free_port()
    server = ServerProcess(
        gunicorn_command(
            "flask_app:create_app()", port, "-w", "3", "-c", str(HERE / "gunicorn_conf.py")
        ),
        app_env(sidecar.push_url, FLASK_APP_DIR=str(tmp_path)),
        tmp_path / "gunicorn.log",
    )
    servers.append(server)
    base = f"http://127.0.0.1:{port}"
    wait_http(server, base + "/pid")
    paths = ["/orders"] * 30 + ["/audit"] * 20 + ["/both"] * 10
    answers = [json.loads(b) for b in drive(base, paths, threads=6)]
    served = {a["pid"] for a in answers}

    def value(name: str, pool: str) -> float | None:
        return sidecar.value(name, app="flask_app", pool=pool)

    expected = {"orders": 30 + 10, "audit": 20 + 10}
    for pool, total in expected.items():
        server.wait_until(
            sidecar, lambda p=pool, t=total: value("sqlalchemy_pool_checkouts_total", p) == t
        )
        assert value("sqlalchemy_pool_use_seconds_count", pool) == total
    # Only workers that served report, each with both binds; the master never does.
    processes = {p["pid"] for p in sidecar.api()["processes"] if p["app"] == "flask_app"}
    assert served <= processes and len(processes) <= 3
    assert server.proc.pid not in processes
    for pool, per_process in {"orders": 2 + 1, "audit": 1 + 1}.items():
        assert value("sqlalchemy_pool_processes", pool) == len(processes)
        assert value("sqlalchemy_pool_max_connections", pool) == len(processes) * per_process
        # A sync worker serves one request at a time: one connection per bind it read,
        # opened by itself — the pool it inherited from the master (which created the
        # tables) was replaced, never used.
        readers = {a["pid"] for a in answers if pool in a}
        assert value("sqlalchemy_pool_connections_created_total", pool) == len(readers)

    assert server.stop() == 0
    for pool, total in expected.items():  # final pushes: retired at once, totals kept
        assert value("sqlalchemy_pool_processes", pool) == 0
        assert value("sqlalchemy_pool_checkouts_total", pool) == total
    assert sidecar.value("pool_exporter_processes_expired_total") == 0
    assert "Traceback" not in server.log()
