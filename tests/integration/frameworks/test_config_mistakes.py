"""The configuration mistakes a new user makes: each is one clear line, the rest applies.

Every case runs a real script (``shopapp.py``) against a real sidecar with one mistake
in its environment and checks the exact lines on its stderr (no logging configured, as
in a fresh app: warnings reach stderr bare), the settings it ended up with, and what
arrived at the sidecar. Plus the README's ``start_http_server`` under ``gunicorn -w 3``.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.integration.conftest import ROOT, RunningSidecar
from tests.integration.frameworks.conftest import HERE, app_env, drive, http_get, wait_http
from tests.integration.servers import ServerProcess, free_port, gunicorn_command

pytestmark = [pytest.mark.integration]
NOT_A_NUMBER = "Input should be a valid number, unable to parse string as a number"
PUSH = "{push}"  # the sidecar's push URL, filled in per test
BASE = "{base}"  # the sidecar's metrics URL


def run_shopapp(
    sidecar: RunningSidecar, tmp_path: Path, env: dict[str, str]
) -> tuple[list[str], dict[str, object]]:
    """Run the script with ``env``; its stderr lines and the settings it printed."""
    filled = {
        k: v.replace(PUSH, sidecar.push_url).replace(BASE, sidecar.metrics_url)
        for k, v in env.items()
    }
    result = subprocess.run(
        [sys.executable, str(HERE / "shopapp.py"), str(tmp_path / "shop.db")],
        env={**app_env(None), **filled},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return result.stderr.splitlines(), json.loads(result.stdout)


GOOD = {
    "POOL_EXPORTER_PUSH_URL": PUSH,
    "POOL_EXPORTER_APP": "shop",
    "POOL_EXPORTER_PUSH_INTERVAL": "2",
    "POOL_EXPORTER_LEAK_THRESHOLD": "7",
}


@pytest.mark.parametrize(
    ("mistake", "lines", "settings"),
    [
        pytest.param(
            {"POOL_EXPORTER_PUSH_INTERVAL": "abc"},
            [
                "ignoring invalid setting variable=POOL_EXPORTER_PUSH_INTERVAL "
                f"problem='{NOT_A_NUMBER}'"
            ],
            {"push_interval": 5.0},
            id="push-interval-not-a-number",
        ),
        pytest.param(
            {"POOL_EXPORTER_LEAK_THRESHOLD": "30s"},
            [
                "ignoring invalid setting variable=POOL_EXPORTER_LEAK_THRESHOLD "
                f"problem='{NOT_A_NUMBER}'"
            ],
            {"leak_threshold": 30.0},
            id="leak-threshold-with-unit",
        ),
        pytest.param(
            {"POOL_EXPORTER_PUSH_INTERVAL": "0", "POOL_EXPORTER_LEAK_THRESHOLD": "-1"},
            [
                "ignoring invalid setting variable=POOL_EXPORTER_PUSH_INTERVAL "
                "problem='Input should be greater than 0'",
                "ignoring invalid setting variable=POOL_EXPORTER_LEAK_THRESHOLD "
                "problem='Input should be greater than or equal to 0'",
            ],
            {"push_interval": 5.0, "leak_threshold": 30.0},
            id="two-out-of-range",
        ),
        pytest.param(
            {"POOL_EXPORTER_APP": ""},
            [],
            {"app": "shopapp"},  # empty is unset: the script's name
            id="empty-app",
        ),
        pytest.param(
            {"POOL_EXPORTER_PUSH_URL": "{push_base}"},
            [],
            {},
            id="push-url-without-path",
        ),
    ],
)
def test_one_bad_variable_is_one_line_and_the_rest_applies(
    mistake: dict[str, str],
    lines: list[str],
    settings: dict[str, object],
    sidecar: RunningSidecar,
    tmp_path: Path,
) -> None:
    push_base = sidecar.push_url.removesuffix("/v1/push")
    env = {k: v.replace("{push_base}", push_base) for k, v in {**GOOD, **mistake}.items()}
    stderr, got = run_shopapp(sidecar, tmp_path, env)
    assert stderr == lines
    expected = {
        "app": "shop",
        "leak_threshold": 7.0,
        "push_url": sidecar.push_url,
        "push_interval": 2.0,
        **settings,
    }
    assert got == expected
    labels = {"app": str(expected["app"]), "pool": "db"}
    assert sidecar.value("sqlalchemy_pool_checkouts_total", **labels) == 3  # pushes arrived
    assert sidecar.value("pool_exporter_pushes_total", result="rejected") == 0


@pytest.mark.parametrize("path", ["/v1/push", ""])
def test_a_push_url_on_the_metrics_port_logs_where_pushes_go(
    path: str, sidecar: RunningSidecar, tmp_path: Path
) -> None:
    stderr, got = run_shopapp(sidecar, tmp_path, {**GOOD, "POOL_EXPORTER_PUSH_URL": BASE + path})
    url = sidecar.metrics_url + "/v1/push"
    assert stderr == [
        f"push to sidecar failed; will retry each interval url={url} error='HTTP 404 pushes "
        "go to the push listener (POOL_EXPORTER_PUSH_LISTEN), not the metrics port'"
    ]
    assert got["push_url"] == url
    assert sidecar.api()["processes"] == []


def test_a_bad_push_url_never_echoes_credentials(sidecar: RunningSidecar, tmp_path: Path) -> None:
    env = {
        **GOOD,
        "POOL_EXPORTER_PUSH_URL": "http://pusher:hunter2@127.0.0.1:ninety/v1/push",
        "POOL_EXPORTER_TOKEN": "t0ken-hunter2",
    }
    stderr, got = run_shopapp(sidecar, tmp_path, env)
    assert stderr == [
        "ignoring invalid setting variable=POOL_EXPORTER_PUSH_URL "
        "problem='is not a valid URL (host:port?)'"
    ]
    assert (got["push_url"], got["app"], got["leak_threshold"]) == (None, "shop", 7.0)


def test_start_http_server_in_every_gunicorn_worker_never_takes_the_app_down(
    servers: list[ServerProcess], tmp_path: Path
) -> None:
    port, metrics_port = free_port(), free_port()
    server = ServerProcess(
        gunicorn_command("http_server_app:app", port, "-w", "3", preload=False),
        app_env(
            None,
            HTTP_SERVER_APP_DB=str(tmp_path / "app.db"),
            HTTP_SERVER_APP_PORT=str(metrics_port),
        ),
        tmp_path / "gunicorn.log",
    )
    servers.append(server)
    base = f"http://127.0.0.1:{port}"
    wait_http(server, base + "/")
    answers = drive(base, ["/"] * 60, threads=6)
    serving = {a.split()[0] for a in answers if a.endswith(" serving")}
    assert len(serving) <= 1
    metrics = http_get(f"http://127.0.0.1:{metrics_port}/metrics")
    assert 'sqlalchemy_pool_checkouts_total{pool="main"}' in metrics  # one worker's pool
    line = (
        f"cannot serve metrics; not serving them from this process address=127.0.0.1:"
        f"{metrics_port} error='Address already in use' hint='multi-process apps: run the "
        "sidecar (sqlalchemy-pool-exporter serve) and set POOL_EXPORTER_PUSH_URL in the app'"
    )

    deadline = time.monotonic() + 20
    while server.log().splitlines().count(line) < 2 and time.monotonic() < deadline:
        time.sleep(0.1)  # the other two workers may still be booting
    assert server.log().splitlines().count(line) == 2
    assert server.log().count("Booting worker") == 3  # none failed to boot, none replaced
    assert "Worker failed to boot" not in server.log()
    assert server.proc.poll() is None
