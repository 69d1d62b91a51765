"""``status``: the table from a real sidecar's /api/pools, --watch, and an unreachable one."""

from __future__ import annotations

import codecs
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from sqlalchemy_pool_exporter.cli import main
from sqlalchemy_pool_exporter.sidecar.server import Sidecar
from tests.sidecars import RunningSidecar
from tests.unit.sidecar_payloads import encode, payload, pool

ROOT = Path(__file__).resolve().parents[2]
CLEAR = "\x1b[H\x1b[2J"  # what --watch writes before each frame


@pytest.fixture
def sc(sidecar_factory: Callable[..., RunningSidecar]) -> Sidecar:
    sidecar = sidecar_factory().server
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
    return sidecar


def test_table(sc: Sidecar, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["status", "--url", sc.push_url.removesuffix("/v1/push")]) == 0
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


def test_metrics_listener_has_no_api_by_default(
    sc: Sidecar, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["status", "--url", sc.metrics_url]) == 1
    assert capsys.readouterr().err == (
        f"sqlalchemy-pool-exporter status: sidecar at {sc.metrics_url} answered HTTP 404 for "
        "/api/pools (is /api/pools served there? see POOL_EXPORTER_API_LISTEN)\n"
    )


CLEAR = "\x1b[H\x1b[2J"


def test_watch_redraws_until_interrupted(sc: Sidecar) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("POOL_EXPORTER_")}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "sqlalchemy_pool_exporter",
            "status",
            "--url",
            sc.push_url.removesuffix("/v1/push"),
            "--watch",
            "0.2",
        ],
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env=env,
    )
    assert proc.stdout is not None
    out, decode = "", codecs.getincrementaldecoder("utf-8")().decode
    deadline = time.monotonic() + 30
    while out.count(CLEAR) < 4 and time.monotonic() < deadline:  # three whole frames
        chunk = os.read(proc.stdout.fileno(), 65536)
        if not chunk:
            break  # it exited: the assertions below say how
        out += decode(chunk)
    proc.send_signal(signal.SIGINT)
    rest, _ = proc.communicate(timeout=10)
    out += rest
    assert proc.returncode == 0
    # The interrupt may land between a clear and its frame: count only drawn frames.
    frames = [frame for frame in out.split(CLEAR)[1:] if frame]
    assert len(frames) >= 3
    assert all("web-1/12" in frame for frame in frames), frames


def test_a_pool_without_live_processes_says_so(
    sc: Sidecar, capsys: pytest.CaptureFixture[str]
) -> None:
    gone = payload("c", app="billing", pid=13, final=True, pools={"db": pool(checkouts=5)})
    assert sc.ingest(encode(gone))[0] == 200
    assert main(["status", "--url", sc.push_url.removesuffix("/v1/push")]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[1].split() == ["billing", "db", "0", *["-"] * 6, "no", "live", "process"]
    assert "∞" not in "\n".join(lines)
    assert lines[-1] == "2 live processes; 1 pool with no live process (totals kept)"
