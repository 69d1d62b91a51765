"""Load generator of the compose stack: steady traffic with a burst of slow reports.

``LOADGEN_CONCURRENCY`` threads request the app at ``LOADGEN_TARGET``. Most requests are
quick; a few are slow reports and a few leak. For one minute in every five the share of
slow reports jumps, the pool runs dry and requests queue and time out — what the
dashboard and the alerts are for.
"""

from __future__ import annotations

import os
import random
import threading
import time
import urllib.error
import urllib.request

TARGET = os.environ.get("LOADGEN_TARGET", "http://app:8000")
CONCURRENCY = int(os.environ.get("LOADGEN_CONCURRENCY", "24"))
BURST_EVERY_SECONDS = 300
BURST_SECONDS = 60


def pick_path(now: float) -> str:
    """The next route: mostly quick, more slow reports during a burst."""
    burst = now % BURST_EVERY_SECONDS >= BURST_EVERY_SECONDS - BURST_SECONDS
    roll = random.random()
    if roll < 0.01:
        return "/leak"
    if roll < (0.6 if burst else 0.08):
        return "/report"
    return "/"


def worker() -> None:
    """Request forever; errors are expected during bursts and only slow the loop down."""
    while True:
        try:
            with urllib.request.urlopen(TARGET + pick_path(time.time()), timeout=30) as response:
                response.read()
        except (urllib.error.URLError, OSError):
            time.sleep(1.0)
        time.sleep(random.uniform(0.02, 0.2))


def main() -> None:
    """Start the threads and keep the process alive."""
    for i in range(CONCURRENCY):
        threading.Thread(target=worker, name=f"loadgen-{i}", daemon=True).start()
    print(f"loadgen: {CONCURRENCY} threads against {TARGET}", flush=True)
    while True:
        time.sleep(3600)


if __name__ == "__main__":
    main()
