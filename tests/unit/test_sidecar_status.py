"""``status``: the table from a real sidecar's /api/pools, --watch, and an unreachable one."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from sqlalchemy_pool_exporter.cli import main
from sqlalchemy_pool_exporter.sidecar.server import Sidecar
from sqlalchemy_pool_exporter.sidecar.settings import SidecarSettings
from tests.unit.sidecar_payloads import encode, payload, pool

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def sc() -> Iterator[Sidecar]:
    sidecar = Sidecar(SidecarSettings(listen="127.0.0.1:0", push_listen="127.0.0.1:0")).start()
    held = [
        {"age_seconds": 45.0, "site": "app/views.py:42 in order", "thread": "w-1", "leaked": True}
    ]
    assert (
        sidecar.ingest(
            encode(
                payload(
                    "a",
                    pid=11,
                    pools={
                        "db": pool(
                            held=held,
                            gauges={
                                "checked_out": 1,
                                "idle": 4,
                                "utilization_ratio": 1 / 15,
                                "peak_utilization_ratio": 0.2,
                                "oldest_checkout_seconds": 45.0,
                                "leaked_connections": 1,
                            },
                        )
                    },
                )
            )
        )[0]
        == 200
    )
    assert (
        sidecar.ingest(
            encode(
                payload(
                    "b",
                    pid=12,
                    pools={
                        "db": pool(
                            gauges={
                                "checked_out": 3,
                                "pending": 2,
                                "utilization_ratio": 0.2,
                                "peak_utilization_ratio": 0.4,
                            }
                        )
                    },
                )
            )
        )[0]
        == 200
    )
    yield sidecar
    sidecar.stop()


def test_table(sc: Sidecar, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["status", "--url", sc.metrics_url]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split() for line in lines] == [
        [
            "APP",
            "POOL",
            "PROCS",
            "IN",
            "USE",
            "UTIL",
            "PEAK",
            "PENDING",
            "OLDEST",
            "LEAKED",
            "TOP",
            "CHECKOUT",
            "SITES",
        ],
        [
            "shop",
            "db",
            "2",
            "4/30",
            "20%",
            "40%",
            "2",
            "45.0s",
            "1",
            "app/views.py:42",
            "in",
            "order:",
            "1",
            "held,",
            "45.0s",
        ],
        ["└", "web-1/11", "1/15", "7%", "20%", "0", "45.0s", "1"],
        ["└", "web-1/12", "3/15", "20%", "40%", "2", "0.0s", "0"],
        ["2", "live", "processes"],
    ]


def test_unreachable_sidecar_is_one_line_and_exit_1(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    assert main(["status", "--url", f"http://127.0.0.1:{port}"]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == (
        f"sqlalchemy-pool-exporter status: cannot reach the sidecar at "
        f"http://127.0.0.1:{port}: [Errno 111] Connection refused\n"
    )


def test_watch_redraws_until_interrupted(sc: Sidecar) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("POOL_EXPORTER_")}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "sqlalchemy_pool_exporter",
            "status",
            "--url",
            sc.metrics_url,
            "--watch",
            "0.2",
        ],
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env=env,
    )
    assert proc.stdout is not None
    seen = ""
    deadline = time.monotonic() + 20
    while seen.count("\x1b[H\x1b[2J") < 3 and time.monotonic() < deadline:
        seen += proc.stdout.readline()  # the process starting may take seconds on a busy box
    proc.send_signal(signal.SIGINT)
    out = seen + proc.stdout.read()  # to EOF: the buffered rest of what readline() saw
    proc.wait(10)
    assert proc.returncode == 0
    frames = out.split("\x1b[H\x1b[2J")[1:]
    assert len(frames) >= 3
    assert all("web-1/12" in frame for frame in frames)


def test_a_pool_without_live_processes_says_so(
    sc: Sidecar, capsys: pytest.CaptureFixture[str]
) -> None:
    gone = payload("c", app="billing", pid=13, final=True, pools={"db": pool(checkouts=5)})
    assert sc.ingest(encode(gone))[0] == 200
    assert main(["status", "--url", sc.metrics_url]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[1].split() == ["billing", "db", "0", *["-"] * 6, "no", "live", "process"]
    assert "∞" not in "\n".join(lines)
    assert lines[-1] == "2 live processes; 1 pool with no live process (totals kept)"
