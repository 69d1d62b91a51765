"""Acceptance: a real gunicorn (preload_app, sync workers) pushing to a real sidecar.

Real HTTP requests drive :mod:`tests.integration.gunicorn_app`; the sidecar's counters
must equal the number of requests exactly — through a sidecar restart, a ``kill -9`` of
a worker and ``max_requests`` recycling — and never go down.
"""

from __future__ import annotations

import os
import signal
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import gunicorn  # noqa: F401  (a missing gunicorn must fail, not skip)
import pytest

from tests.integration.conftest import RunningSidecar, start_sidecar, start_sidecar_process
from tests.integration.servers import ServerProcess, free_port, gunicorn_command, push_env

pytestmark = [pytest.mark.integration, pytest.mark.slow]
INTERVAL = 0.5
APP = "gunicorn-test"


class Gunicorn(ServerProcess):
    """A gunicorn master serving the test app, pushing to ``push_url``."""

    def __init__(self, tmp: Path, push_url: str, *flags: str) -> None:
        self.port = free_port()
        super().__init__(
            gunicorn_command("tests.integration.gunicorn_app:app", self.port, *flags),
            push_env(
                push_url,
                INTERVAL,
                APP,
                GUNICORN_APP_DB=str(tmp / "app.db"),
                POOL_EXPORTER_LEAK_THRESHOLD="0.5",
            ),
            tmp / "gunicorn.log",
        )

    def get(self, path: str) -> float:
        """One request; returns its latency in seconds (fails on any non-200)."""
        start = time.perf_counter()
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=15) as r:
            assert r.status == 200
            r.read()
        return time.perf_counter() - start

    def drive(self, healthy: int, leaky: int = 0) -> list[float]:
        """Send the requests from 4 client threads; returns their latencies."""
        paths = ["/healthy"] * healthy + ["/leaky"] * leaky
        with ThreadPoolExecutor(4) as pool:
            return list(pool.map(self.get, paths))

    def wait_for_processes(self, sc: RunningSidecar, n: int, timeout: float = 30) -> None:
        """Wait until the sidecar sees ``n`` live processes; on failure show gunicorn's log."""
        try:
            sc.wait_until(lambda: processes(sc) == n, timeout=timeout)
        except pytest.fail.Exception:
            tail = self.log().splitlines()[-15:]
            pytest.fail(f"{processes(sc)} processes, not {n}; gunicorn log:\n" + "\n".join(tail))


def checkouts(sc: RunningSidecar) -> float | None:
    return sc.value("sqlalchemy_pool_checkouts_total", app=APP, pool="main")


def processes(sc: RunningSidecar) -> float | None:
    return sc.value("sqlalchemy_pool_processes", app=APP, pool="main")


def expect_exact(sc: RunningSidecar, total: int) -> None:
    """Counters reach ``total`` and stay there (nothing counted twice)."""
    sc.wait_until(lambda: checkouts(sc) == total, timeout=15)
    time.sleep(2 * INTERVAL)
    assert checkouts(sc) == total
    assert sc.value("sqlalchemy_pool_wait_seconds_count", app=APP, pool="main") == total


def test_exact_counts_through_sidecar_restart_and_kill_9(
    tmp_path: Path, servers: list[ServerProcess]
) -> None:
    metrics_port, push_port = free_port(), free_port()
    fixed = ("--listen", f"127.0.0.1:{metrics_port}", "--push-listen", f"127.0.0.1:{push_port}")
    sc = start_sidecar_process(*fixed)
    try:
        g = Gunicorn(tmp_path, sc.push_url, "-w", "4")
        servers.append(g)
        # 4 workers and the preloading master (its pool is instrumented, and idle)
        g.wait_for_processes(sc, 5)
        assert checkouts(sc) == 0
        g.drive(healthy=120, leaky=8)
        expect_exact(sc, 128)
        assert (
            sc.value("sqlalchemy_pool_connections", app=APP, pool="main", state="checked_out") == 8
        )
        sc.wait_until(
            lambda: sc.value("sqlalchemy_pool_leaked_connections", app=APP, pool="main") == 8
        )
        (pool,) = sc.api()["pools"]
        assert pool["sites"][0]["held"] == 8
        assert "gunicorn_app.py" in pool["sites"][0]["site"]

        # Sidecar restart: the app keeps serving; the new sidecar gets the same totals.
        sc.stop()
        latencies = g.drive(healthy=40)
        assert len(latencies) == 40
        sc = start_sidecar_process(*fixed)
        g.wait_for_processes(sc, 5, timeout=15)
        expect_exact(sc, 168)

        # kill -9 of a worker holding leaked connections: nothing goes down, its gauges go.
        (pool,) = sc.api()["pools"]
        victim = max(pool["per_process"], key=lambda p: p["gauges"]["checked_out"])
        held = victim["gauges"]["checked_out"]
        assert held > 0
        pid = int(victim["process"].rsplit("/", 1)[1])
        os.kill(pid, signal.SIGKILL)
        killed_at = time.monotonic()
        last = checkouts(sc) or 0.0
        seen_gone = False
        while time.monotonic() - killed_at < 3 * INTERVAL + 1.0:
            now = checkouts(sc) or 0.0
            assert now >= last  # counters never go down
            last = now
            asked_at = time.monotonic() - killed_at
            live = {p["pid"] for p in sc.api()["processes"]}
            if pid in live:
                # answered after asked_at: still there later than 3 intervals is a failure
                assert asked_at <= 3 * INTERVAL + 0.05, f"still live {asked_at:.2f} s after kill"
            else:
                seen_gone = True
            time.sleep(0.05)
        assert seen_gone
        assert (
            sc.value("sqlalchemy_pool_connections", app=APP, pool="main", state="checked_out")
            == 8 - held
        )
        assert checkouts(sc) == 168
        assert sc.value("pool_exporter_processes_expired_total") == 1
        g.wait_for_processes(sc, 5, timeout=15)  # gunicorn replaced it
        g.drive(healthy=30)
        expect_exact(sc, 198)
    finally:
        sc.stop()


def test_max_requests_recycling_keeps_totals_exact_and_series_constant(
    tmp_path: Path, servers: list[ServerProcess]
) -> None:
    sc = start_sidecar()
    try:
        g = Gunicorn(tmp_path, sc.push_url, "-w", "3", "--max-requests", "15")
        servers.append(g)
        g.wait_for_processes(sc, 4)
        series = sorted(k for k in sc.metrics_text().splitlines() if k.startswith("sqlalchemy_"))
        names = [line.split(" ")[0] for line in series]
        for _ in range(3):
            g.drive(healthy=50)
            now = [
                line.split(" ")[0]
                for line in sc.metrics_text().splitlines()
                if line.startswith("sqlalchemy_")
            ]
            assert sorted(now) == names
        expect_exact(sc, 150)
        # every recycled worker said goodbye with a final push: none had to expire
        assert sc.value("pool_exporter_processes_expired_total") == 0
        assert (sc.value("pool_exporter_pushes_total", result="accepted") or 0) > 10
        assert sc.value("pool_exporter_pushes_total", result="rejected") == 0
        g.wait_for_processes(sc, 4, timeout=15)
    finally:
        sc.stop()
