"""The README's main job: the demo runs, serves pool metrics, and stops by itself."""

from __future__ import annotations

import re
import subprocess
import sys
import time
import urllib.request


def test_demo_serves_metrics_and_stops_by_itself() -> None:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "exporter",
            "demo",
            "--duration",
            "6",
            "--port",
            "0",
            "--leak-threshold",
            "1",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert proc.stdout is not None
    url = None
    lines: list[str] = []
    deadline = time.monotonic() + 30
    while url is None and time.monotonic() < deadline:
        line = proc.stdout.readline()
        lines.append(line)
        match = re.search(r"(http://127\.0\.0\.1:\d+/metrics)", line)
        if match:
            url = match.group(1)
    assert url, "".join(lines)
    time.sleep(3)
    body = urllib.request.urlopen(url, timeout=5).read().decode()
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, out
    checkouts = re.search(r'sqlalchemy_pool_checkouts_total\{pool="shop"\} (\d+)', body)
    assert checkouts and int(checkouts.group(1)) > 0
    assert 'sqlalchemy_pool_max_connections{pool="shop"} 10.0' in body
    assert "demo: done" in out
    assert "connection leak suspected" in out  # the leaky handler shows up in the log
