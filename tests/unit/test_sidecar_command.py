"""``serve``: flags and environment, invalid settings, the ``listening`` line, shutdown."""

from __future__ import annotations

import fcntl
import json
import os
import signal
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from sqlalchemy_pool_exporter.cli import build_parser
from sqlalchemy_pool_exporter.sidecar.command import load
from sqlalchemy_pool_exporter.sidecar.settings import SidecarSettings
from tests.unit.sidecar_payloads import encode, payload, pool

ROOT = Path(__file__).resolve().parents[2]


def serve(*flags: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("POOL_EXPORTER_")}
    return subprocess.Popen(
        [sys.executable, "-m", "sqlalchemy_pool_exporter", "serve", "--log-format", "json", *flags],
        stderr=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env={**clean, **(env or {})},
    )


def test_every_setting_is_a_flag() -> None:
    parser = build_parser()
    for name in SidecarSettings.model_fields:
        flag = "--" + name.replace("_", "-")
        assert any(
            flag in a.option_strings
            for sub in parser._subparsers._group_actions  # type: ignore[union-attr]
            for a in sub.choices["serve"]._actions
        ), flag  # type: ignore[attr-defined]


def test_flags_override_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POOL_EXPORTER_MAX_PROCESSES", "5")
    monkeypatch.setenv("POOL_EXPORTER_PER_PROCESS", "true")
    args = build_parser().parse_args(["serve", "--max-processes", "7", "--token", "x"])
    settings = load(args)
    assert (settings.max_processes, settings.per_process) == (7, True)
    assert settings.token is not None and settings.token.get_secret_value() == "x"
    args = build_parser().parse_args(["serve", "--no-per-process"])
    assert (load(args).max_processes, load(args).per_process) == (5, False)


@pytest.mark.parametrize(
    ("flags", "env", "line"),
    [
        (
            ["--max-body-bytes", "12"],
            {},
            "invalid setting POOL_EXPORTER_MAX_BODY_BYTES "
            "(max_body_bytes): Input should be greater than or equal to 1024",
        ),
        (
            [],
            {"POOL_EXPORTER_LISTEN": "nowhere"},
            "invalid setting POOL_EXPORTER_LISTEN (listen): expected host:port, got 'nowhere'",
        ),
        (
            ["--log-format", "xml", "--token", "hunter2"],
            {},
            "invalid setting "
            "POOL_EXPORTER_LOG_FORMAT (log_format): String should match pattern "
            "'^(auto|json|console)$'",
        ),
        (
            ["--database-url", "mssql://app:hunter2@db/shop"],
            {},
            "invalid setting "
            "POOL_EXPORTER_DATABASE_URL (database_url): database probe supports PostgreSQL, "
            "MySQL and MariaDB, not 'mssql'",
        ),
        (
            ["--database-url", "mysql://app:hunter2@db/shop?init_command=hunter2"],
            {},
            "invalid setting "
            "POOL_EXPORTER_DATABASE_URL (database_url): database URL parameter(s) not "
            "supported: init_command",
        ),
        (
            ["--state-dir", "/dev/null/state"],
            {},
            "invalid setting POOL_EXPORTER_STATE_DIR (state_dir): cannot create directory "
            "'/dev/null/state': Not a directory",
        ),
        (
            [],
            {"POOL_EXPORTER_DATABASE_URL": "host=db password=hunter2 = broken"},
            "invalid setting POOL_EXPORTER_DATABASE_URL (database_url): database URL is not "
            "a valid URL or libpq DSN",
        ),
    ],
)
def test_invalid_setting_exits_2_with_one_line(
    flags: list[str], env: dict[str, str], line: str
) -> None:
    proc = serve(*flags, env=env)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 2
    assert err == f"sqlalchemy-pool-exporter serve: {line}\n"
    assert "hunter2" not in err + out


def test_serve_listens_on_port_0_logs_addresses_and_stops_on_sigterm() -> None:
    proc = serve("--listen", "127.0.0.1:0", "--push-listen", "127.0.0.1:0", "--token", "hunter2")
    assert proc.stderr is not None
    warning = json.loads(proc.stderr.readline())
    assert (warning["event"], warning["level"], warning["flag"], warning["instead"]) == (
        "secret given on the command line: every local user can read it in "
        "/proc/<pid>/cmdline; use the file setting instead",
        "warning",
        "--token",
        "--token-file",
    )
    assert "hunter2" not in json.dumps(warning)
    event = json.loads(proc.stderr.readline())
    assert event["event"] == "listening"
    assert event["metrics"].startswith("http://127.0.0.1:")
    assert event["push"].startswith("http://127.0.0.1:") and event["push"].endswith("/v1/push")
    request = urllib.request.Request(
        event["push"],
        data=encode(payload("a", pools={"db": pool(checkouts=2)})),
        headers={"Authorization": "Bearer hunter2"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 200
    with urllib.request.urlopen(event["metrics"] + "/metrics", timeout=10) as response:
        text = response.read().decode()
    assert 'sqlalchemy_pool_checkouts_total{app="shop",pool="db"} 2.0' in text
    proc.send_signal(signal.SIGTERM)
    _, rest = proc.communicate(timeout=30)
    assert proc.returncode == 0
    assert [json.loads(x)["event"] for x in rest.splitlines()] == ["stopped"]
    assert "hunter2" not in rest


@pytest.mark.parametrize("busy_listener", ["listen", "push_listen"])
def test_port_in_use_exits_1_with_one_line_naming_the_address(busy_listener: str) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        taken = f"127.0.0.1:{busy.getsockname()[1]}"
        addresses = {"listen": "127.0.0.1:0", "push_listen": "127.0.0.1:0", busy_listener: taken}
        proc = serve("--listen", addresses["listen"], "--push-listen", addresses["push_listen"])
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 1
    (line,) = err.splitlines()
    event = json.loads(line)
    assert {k: event[k] for k in ("event", "error", "address", "setting")} == {
        "event": "cannot listen",
        "error": "Address already in use",
        "address": taken,
        "setting": f"POOL_EXPORTER_{busy_listener.upper()}",
    }


def test_an_empty_token_variable_is_no_token() -> None:
    proc = serve(
        "--listen", "127.0.0.1:0", "--push-listen", "127.0.0.1:0", env={"POOL_EXPORTER_TOKEN": ""}
    )
    assert proc.stderr is not None
    event = json.loads(proc.stderr.readline())
    assert (event["event"], event["token"]) == ("listening", False)
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=30)
    assert proc.returncode == 0


def test_state_dir_held_by_another_sidecar_exits_1_with_one_line(tmp_path: Path) -> None:
    with open(tmp_path / "sidecar-state.lock", "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        proc = serve(
            "--listen", "127.0.0.1:0", "--push-listen", "127.0.0.1:0", "--state-dir", str(tmp_path)
        )
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 1
    (line,) = err.splitlines()
    event = json.loads(line)
    assert (event["event"], event["error"]) == (
        "cannot keep state",
        f"{tmp_path} is in use by another sidecar",
    )


def test_database_probe_joins_metrics_and_its_url_is_never_logged() -> None:
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    url = f"postgresql://app:pw-secret@127.0.0.1:{port}/shop"
    proc = serve(
        "--listen",
        "127.0.0.1:0",
        "--push-listen",
        "127.0.0.1:0",
        "--probe-interval",
        "0.2",
        env={"POOL_EXPORTER_DATABASE_URL": url},
    )
    assert proc.stderr is not None
    event = json.loads(proc.stderr.readline())  # the first line, before the probe's own
    assert (event["event"], event["probe"]) == ("listening", True)
    with urllib.request.urlopen(event["metrics"] + "/metrics", timeout=10) as response:
        text = response.read().decode()
    assert 'sqlalchemy_pool_db_up{database="shop"} 0.0' in text
    proc.send_signal(signal.SIGTERM)
    out, rest = proc.communicate(timeout=30)
    assert proc.returncode == 0
    assert "pw-secret" not in json.dumps(event) + rest + out + text


def test_sigterm_right_after_the_listening_line_is_a_clean_stop() -> None:
    # Tools (and Kubernetes) may stop the sidecar as soon as it says it is listening,
    # while the probe is still starting: that must be a clean stop, never a kill.
    url = "postgresql://app:pw@127.0.0.1:9/shop"
    for _ in range(5):
        proc = serve(
            "--listen",
            "127.0.0.1:0",
            "--push-listen",
            "127.0.0.1:0",
            env={"POOL_EXPORTER_DATABASE_URL": url},
        )
        assert proc.stderr is not None
        assert json.loads(proc.stderr.readline())["event"] == "listening"
        proc.send_signal(signal.SIGTERM)
        _, rest = proc.communicate(timeout=30)
        assert proc.returncode == 0
        assert json.loads(rest.strip().splitlines()[-1])["event"] == "stopped"
