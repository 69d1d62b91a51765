"""The README's main job: sidecar + worker processes, metrics served, stops by itself."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from tests.conftest import wait_for

ROOT = Path(__file__).resolve().parents[2]


def test_demo_runs_sidecar_and_workers_and_stops_by_itself() -> None:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "sqlalchemy_pool_exporter",
            "demo",
            "--duration",
            "12",
            "--port",
            "0",
            "--workers",
            "2",
            "--leak-rate",
            "0.05",
            "--leak-threshold",
            "1",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=ROOT,  # checkout sites are shown relative to the working directory
    )
    assert proc.stdout is not None
    base = None
    lines: list[str] = []
    deadline = time.monotonic() + 30
    while base is None and time.monotonic() < deadline:
        line = proc.stdout.readline()
        lines.append(line)
        match = re.search(r"(http://127\.0\.0\.1:\d+)/metrics", line)
        if match:
            base = match.group(1)
    assert base, "".join(lines)
    labels = '{app="shop",pool="shop-db"}'

    def both_workers_counted() -> str | None:  # the kill comes at 6 s
        text = urllib.request.urlopen(f"{base}/metrics", timeout=5).read().decode()
        busy = re.search(rf"sqlalchemy_pool_checkouts_total{re.escape(labels)} ([1-9]\S*)", text)
        return text if busy and f"sqlalchemy_pool_processes{labels} 2.0" in text else None

    body = wait_for(both_workers_counted, timeout=30, step=0.2)
    out, _ = proc.communicate(timeout=60)
    out = "".join(lines) + out
    assert proc.returncode == 0, out

    assert f"sqlalchemy_pool_processes{labels} 2.0" in body
    assert f"sqlalchemy_pool_max_connections{labels} 10.0" in body
    checkouts = re.search(rf"sqlalchemy_pool_checkouts_total{re.escape(labels)} (\S+)", body)
    assert checkouts and float(checkouts.group(1)) > 0
    assert "killed worker pid" in out
    # The sidecar's totals never go backwards, across the SIGKILL and the final pushes.
    seen = [
        int(n) for n in re.findall(r"^demo: (?:final )?processes=\d+ .*checkouts=(\d+)", out, re.M)
    ]
    assert len(seen) >= 4 and seen == sorted(seen), seen
    assert re.search(r"^demo: final processes=0 ", out, re.M)  # every worker retired at exit
    assert "connection leak suspected" in out
    assert "site='exporter/sqlalchemy_pool_exporter/cli/demo.py:" in out
    assert out.rstrip().endswith("demo: done")


def test_demo_port_in_use_is_one_clear_line() -> None:
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "sqlalchemy_pool_exporter",
                "demo",
                "--duration",
                "2",
                "--port",
                str(port),
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert result.returncode == 1
    assert result.stderr == (
        f"demo: cannot listen on 127.0.0.1:{port} (Address already in use); "
        "pick another with --port (0 = any free port)\n"
    )
    assert result.stdout == ""


def test_demo_ctrl_c_to_the_process_group_exits_0_without_tracebacks() -> None:
    # A terminal's Ctrl-C signals the whole foreground process group: demo and workers.
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "sqlalchemy_pool_exporter",
            "demo",
            "--duration",
            "0",
            "--port",
            "0",
            "--workers",
            "2",
            "--leak-rate",
            "0.2",
            "--leak-threshold",
            "0.5",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    assert proc.stdout is not None
    lines: list[str] = []
    deadline = time.monotonic() + 40
    try:
        # Run until leaks have been reported more than once, so repeats had to be summarised.
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            lines.append(line)
            match = re.search(r"^demo: processes=2 .* leaks=(\d+)", line)
            if match and int(match.group(1)) >= 4:
                break
        os.killpg(proc.pid, signal.SIGINT)
        out = "".join(lines) + proc.stdout.read()
        proc.wait(30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)
    assert proc.returncode == 0, out
    assert "Traceback" not in out
    assert "KeyboardInterrupt" not in out
    assert re.search(r"^demo: final processes=0 ", out, re.M), out
    assert out.rstrip().endswith("demo: done")
    # Leak reports: the first per worker and checkout site in full, the rest only counted.
    leaks = [line for line in out.splitlines() if "connection leak suspected" in line]
    workers = {re.search(r"worker-(\d+)", line).group(1) for line in leaks}  # type: ignore[union-attr]
    assert leaks and len(leaks) == len(workers), leaks  # one line per worker (one site)
    assert all(
        line.endswith("(first at this site; later ones only count in leaks=)") for line in leaks
    )
    assert "leaked connection returned" not in out
