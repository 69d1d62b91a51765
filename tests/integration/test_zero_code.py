"""Acceptance: ``sqlalchemy-pool-exporter run -- <command>`` instruments apps that never import it.

Real gunicorn (3 sync workers), real uvicorn (2 spawned workers, asyncio engine), a plain
script with a multiprocessing ``spawn`` child and a ``subprocess`` child — all pushing
to a real sidecar, which must count exactly the checkouts the requests made. And the
command's exit status is ``run``'s.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import gunicorn  # noqa: F401  (a missing gunicorn must fail, not skip)
import pytest
import uvicorn  # noqa: F401  (likewise)

from tests.conftest import require_binary
from tests.integration.conftest import ROOT, RunningSidecar
from tests.integration.servers import ServerProcess, free_port, gunicorn_command

pytestmark = [pytest.mark.integration]
RUN = [sys.executable, "-m", "sqlalchemy_pool_exporter", "run", "--"]
INTERVAL = "0.3"


def environment(tmp_path: Path, sc: RunningSidecar | None = None, app: str = "") -> dict[str, str]:
    """The environment of a command under ``run``: push to ``sc`` as ``app``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("POOL_EXPORTER_")}
    env.update(ZERO_CODE_DB=str(tmp_path / "app.db"), PYTHONPATH=str(ROOT))
    if sc is not None:
        env.update(
            POOL_EXPORTER_PUSH_URL=sc.push_url,
            POOL_EXPORTER_PUSH_INTERVAL=INTERVAL,
            POOL_EXPORTER_APP=app,
        )
    return env


def run(*command: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*RUN, *command], capture_output=True, text=True, env=env, cwd=ROOT, timeout=120
    )


def pool_value(sc: RunningSidecar, name: str, app: str) -> float | None:
    """``name`` summed over the pools of ``app`` (one pool per app in these tests)."""
    values = [v for labels, v in sc.series(name).items() if ("app", app) in labels]
    return sum(values) if values else None


class Served(ServerProcess):
    """A server started under ``run``, and how to drive it."""

    def __init__(self, command: list[str], env: dict[str, str], port: int, log: Path) -> None:
        self.port = port
        super().__init__([*RUN, *command], env, log)

    def query(self, _: int = 0) -> None:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/query", timeout=15) as r:
            assert r.status == 200 and r.read() == b"1"

    def drive(self, n: int) -> None:
        with ThreadPoolExecutor(4) as pool:
            list(pool.map(self.query, range(n)))

    def wait_for(self, sc: RunningSidecar, app: str, processes: int) -> None:
        try:
            sc.wait_until(
                lambda: pool_value(sc, "sqlalchemy_pool_processes", app) == processes, timeout=60
            )
        except pytest.fail.Exception:
            pytest.fail("server log:\n" + "\n".join(self.log().splitlines()[-20:]))

    def stop(self, timeout: float = 30.0) -> int:
        return super().stop(timeout)


def expect_checkouts(sc: RunningSidecar, app: str, n: int) -> None:
    sc.wait_until(lambda: pool_value(sc, "sqlalchemy_pool_checkouts_total", app) == n)
    assert pool_value(sc, "sqlalchemy_pool_wait_seconds_count", app) == n
    assert pool_value(sc, "sqlalchemy_pool_use_seconds_count", app) == n


@pytest.mark.slow
def test_gunicorn_three_workers(
    tmp_path: Path, sidecar: RunningSidecar, servers: list[ServerProcess]
) -> None:
    port = free_port()
    command = gunicorn_command(
        "tests.integration.zero_code_wsgi:app", port, "-w", "3", preload=False
    )
    server = Served(command, environment(tmp_path, sidecar, "zc-gunicorn"), port, tmp_path / "log")
    servers.append(server)
    server.wait_for(sidecar, "zc-gunicorn", 3)  # the workers; the master has no engine
    assert pool_value(sidecar, "sqlalchemy_pool_checkouts_total", "zc-gunicorn") == 0
    server.drive(60)
    expect_checkouts(sidecar, "zc-gunicorn", 60)
    assert server.stop() == 0  # gunicorn's own status: run became gunicorn
    # Every worker said goodbye with a final push; nothing was counted twice.
    sidecar.wait_until(lambda: not pool_value(sidecar, "sqlalchemy_pool_processes", "zc-gunicorn"))
    assert pool_value(sidecar, "sqlalchemy_pool_checkouts_total", "zc-gunicorn") == 60


@pytest.mark.slow
def test_uvicorn_two_spawned_workers_with_an_asyncio_engine(
    tmp_path: Path, sidecar: RunningSidecar, servers: list[ServerProcess]
) -> None:
    port = free_port()
    command = [
        sys.executable,
        "-m",
        "uvicorn",
        "--workers",
        "2",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--no-access-log",
        "tests.integration.zero_code_asgi:app",
    ]
    server = Served(command, environment(tmp_path, sidecar, "zc-uvicorn"), port, tmp_path / "log")
    servers.append(server)
    server.wait_for(sidecar, "zc-uvicorn", 2)
    server.drive(40)
    expect_checkouts(sidecar, "zc-uvicorn", 40)
    (pool,) = {dict(k)["pool"] for k in sidecar.series("sqlalchemy_pool_checkouts_total")}
    assert pool == f"sqlite:///{tmp_path / 'app.db'}"


def test_plain_script_and_its_spawned_and_subprocess_children(
    tmp_path: Path, sidecar: RunningSidecar
) -> None:
    env = environment(tmp_path, sidecar, "zc-script")
    done = run(sys.executable, "tests/integration/zero_code_script.py", "7", env=env)
    assert done.returncode == 0, done.stderr
    # Three processes, each retired by its final push at exit: 3 x 7 checkouts.
    expect_checkouts(sidecar, "zc-script", 21)
    assert not pool_value(sidecar, "sqlalchemy_pool_processes", "zc-script")
    assert sidecar.value("pool_exporter_processes_expired_total") == 0


def test_exit_status_is_the_commands() -> None:
    assert run(sys.executable, "-c", "import sys; sys.exit(3)").returncode == 3
    assert run(sys.executable, "-c", "pass").returncode == 0


def test_death_by_signal_is_the_commands_own() -> None:
    kill = "import os, signal; os.kill(os.getpid(), signal.SIGTERM)"
    # run becomes the command: whoever waits for it sees it die of the signal itself...
    assert run(sys.executable, "-c", kill).returncode == -signal.SIGTERM
    # ... and a shell reports 128+N, as for the command started directly.
    script = " ".join([*RUN, sys.executable, "-c", f"'{kill}'"]) + "; echo $?"
    shell = subprocess.run(["sh", "-c", script], capture_output=True, text=True, cwd=ROOT)
    assert shell.stdout == f"{128 + signal.SIGTERM}\n"


def test_usage_errors_are_one_line() -> None:
    missing = run("no-such-command-anywhere")
    assert (missing.returncode, missing.stderr) == (
        127,
        "sqlalchemy-pool-exporter run: command not found: no-such-command-anywhere\n",
    )
    empty = subprocess.run(RUN[:-1], capture_output=True, text=True, cwd=ROOT)
    assert (empty.returncode, empty.stderr) == (
        2,
        "sqlalchemy-pool-exporter run: no command given "
        "(usage: sqlalchemy-pool-exporter run -- COMMAND ...)\n",
    )
    env = {**os.environ, "POOL_EXPORTER_LEAK_THRESHOLD": "soon"}
    bad = run(sys.executable, "-c", "pass", env=env)
    assert (bad.returncode, bad.stderr) == (
        2,
        "sqlalchemy-pool-exporter run: invalid setting POOL_EXPORTER_LEAK_THRESHOLD "
        "(leak_threshold): Input should be a valid number, unable to parse string as a number\n",
    )


REPORT = """
    import json, sys
    from sqlalchemy import create_engine
    {setup}
    for _ in range(4):
        engine.connect().close()
    import sqlalchemy_pool_exporter
    print(json.dumps([[i.stats.name, i.stats.checkouts, i.stats.leak_threshold, i.automatic]
                      for i in sqlalchemy_pool_exporter.instrumentations()]))
"""


def report(setup: str, tmp_path: Path, *prefix: str, **env: str) -> list[list[object]]:
    """Instrumentations of a Python started under ``run`` (behind ``prefix``)."""
    code = textwrap.dedent(REPORT).format(setup=setup)
    full_env = {**environment(tmp_path), **env}
    done = subprocess.run(
        [*prefix, *RUN, sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env=full_env,
        cwd=ROOT,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    result: list[list[object]] = json.loads(done.stdout)
    return result


def test_engines_get_the_environments_options(tmp_path: Path) -> None:
    setup = "engine = create_engine('sqlite://')"
    got = report(setup, tmp_path, POOL_EXPORTER_LEAK_THRESHOLD="7")
    assert got == [["sqlite://", 4, 7.0, True]]


def test_the_apps_own_instrument_call_takes_over(tmp_path: Path) -> None:
    setup = (
        "import sqlalchemy_pool_exporter\n"
        "engine = create_engine('sqlite://')\n"
        "sqlalchemy_pool_exporter.instrument(engine, name='main', leak_threshold=3)"
    )
    assert report(setup, tmp_path) == [["main", 4, 3.0, False]]
    # Options it does not change keep run's instrumentation (and what it counted).
    setup = (
        "import sqlalchemy_pool_exporter\n"
        "engine = create_engine('sqlite://')\n"
        "engine.connect().close()\n"
        "sqlalchemy_pool_exporter.instrument(engine)"
    )
    assert report(setup, tmp_path) == [["sqlite://", 5, 30.0, False]]


def test_the_url_plugins_options_take_over(tmp_path: Path) -> None:
    setup = "engine = create_engine('sqlite://?plugin=pool_exporter&pool_exporter_name=db')"
    assert report(setup, tmp_path) == [["db", 4, 30.0, False]]


def test_an_existing_sitecustomize_still_runs(tmp_path: Path) -> None:
    own = tmp_path / "site"
    own.mkdir()
    (own / "sitecustomize.py").write_text("import os\nos.environ['OWN_SITE'] = 'ran'\n")
    setup = "import os\nassert os.environ['OWN_SITE'] == 'ran'\nengine = create_engine('sqlite://')"
    pythonpath = f"{own}{os.pathsep}{ROOT}"
    assert report(setup, tmp_path, PYTHONPATH=pythonpath) == [["sqlite://", 4, 30.0, True]]


def test_composes_with_opentelemetry_instrument(tmp_path: Path) -> None:
    otel = require_binary("opentelemetry-instrument")
    run_command = require_binary("sqlalchemy-pool-exporter")
    code = textwrap.dedent(REPORT).format(
        setup="import sys\nassert 'opentelemetry.instrumentation.auto_instrumentation' in "
        "sys.modules\nengine = create_engine('sqlite://')"
    )
    # opentelemetry-instrument's sitecustomize does not chain: it goes outside.
    done = subprocess.run(
        [otel, run_command, "run", "--", sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env=environment(tmp_path),
        cwd=ROOT,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == [["sqlite://", 4, 30.0, True]]
