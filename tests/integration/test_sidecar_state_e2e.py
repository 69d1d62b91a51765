"""End to end with a real Prometheus: counters users can trust across sidecar restarts,
worker retirements and bucket changes.

A real ``sqlalchemy-pool-exporter serve`` subprocess with ``--state-dir`` on fixed ports
is scraped every second by a real ``prometheus``; the test plays the app's processes,
pushing cumulative snapshots over HTTP as the instrumentation does, so it knows the
true counts exactly. Every process first pushes zeros and the test waits for
Prometheus to scrape them, so the true count equals what ``increase()`` can see.

``increase()`` is evaluated over a window aligned on scrape timestamps (from the
baseline scrape to the last one, Prometheus 2's closed range), so it is not
extrapolated and must equal the true count exactly; ``resets()`` must be 0.
"""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sqlalchemy_pool_exporter.protocol.catalog import COUNTER_FIELDS
from tests.conftest import require_binary
from tests.integration import promstack
from tests.integration.conftest import RunningSidecar, start_sidecar_process
from tests.unit.sidecar_payloads import encode, histogram, payload, pool

pytestmark = [pytest.mark.integration, pytest.mark.slow]

JOB = "pool-sidecar"
TIMEOUTS = "sqlalchemy_pool_checkout_timeouts_total"
CHECKOUTS = "sqlalchemy_pool_checkouts_total"
NEW_BUCKETS = [0.01, 0.1, 1.0]


class Fleet:
    """The app's processes as the sidecar sees them: cumulative pushes with rising seq."""

    def __init__(self, app: str) -> None:
        self.app = app
        self.push_url = ""
        self.seq: dict[str, int] = {}

    def push(
        self,
        instance: str,
        *,
        timeouts: int = 0,
        checkouts: int = 0,
        buckets: list[float] | None = None,
        final: bool = False,
    ) -> None:
        self.seq[instance] = self.seq.get(instance, 0) + 1
        hist = None
        if buckets is not None:
            waits = histogram([checkouts] + [0] * len(buckets), buckets=buckets)
            hist = {n: histogram(buckets=buckets) for n in ("use_seconds", "connect_seconds")}
            hist["wait_seconds"] = waits
        data = pool(checkouts=checkouts, counters={"checkout_timeouts": timeouts}, hist=hist)
        doc = payload(
            instance,
            seq=self.seq[instance],
            app=self.app,
            pid=int(instance.lstrip("abcdefghijklmnopqrstuvwxyz")),
            pools={"db": data},
            final=final,
            interval=60.0,  # no expiry while the test runs
        )
        request = urllib.request.Request(self.push_url, data=encode(doc), method="POST")
        with urllib.request.urlopen(request, timeout=10) as response:
            assert response.status == 200


@pytest.fixture
def ports() -> tuple[int, int]:
    return promstack.free_port(), promstack.free_port()


@pytest.fixture
def prometheus(tmp_path: Path, ports: tuple[int, int]) -> Iterator[promstack.Prometheus]:
    require_binary("prometheus")
    config = promstack.prometheus_config({JOB: [f"127.0.0.1:{ports[0]}"]}, interval="1s")
    with promstack.Prometheus(config, workdir=tmp_path / "prom") as prom:
        yield prom


class Stack:
    """The sidecar subprocess (restartable on the same ports) and Prometheus."""

    def __init__(self, prom: promstack.Prometheus, flags: tuple[str, ...]) -> None:
        self.prom = prom
        self.flags = flags
        self.sidecar: RunningSidecar | None = None

    def start(self) -> RunningSidecar:
        self.sidecar = start_sidecar_process(*self.flags)
        return self.sidecar

    def scraped(self, expr: str, value: float, raw: str | None = None) -> float:
        """Wait until Prometheus gives ``expr`` = ``value``; the time of the latest scrape
        of the series ``raw`` (a plain selector; ``expr`` itself by default)."""

        def probe() -> bool:
            result = self.prom.query(expr)
            return len(result) == 1 and float(result[0]["value"][1]) == value

        self.prom.wait_for(probe, 20, f"{expr} == {value} in Prometheus")
        latest = self.prom.query(f"max(timestamp({raw or expr}))")
        return float(latest[0]["value"][1])

    def over(self, expr: str, start: float, end: float) -> list[dict[str, Any]]:
        """``expr`` with ``[W]`` replaced by the window from sample ``start`` to ``end``."""
        window = f"{round((end - start) * 1000)}ms"
        return self.prom.query(expr.replace("[W]", f"[{window}]"), at=end)


@pytest.fixture
def stack(
    tmp_path: Path, ports: tuple[int, int], prometheus: promstack.Prometheus
) -> Iterator[Stack]:
    flags = (
        "--listen",
        f"127.0.0.1:{ports[0]}",
        "--push-listen",
        f"127.0.0.1:{ports[1]}",
        "--state-dir",
        str(tmp_path / "state"),
    )
    stack = Stack(prometheus, flags)
    yield stack
    if stack.sidecar is not None:
        stack.sidecar.stop()


def test_kill_9_restart_and_a_bucket_deploy_lose_nothing_and_invent_nothing(
    stack: Stack,
) -> None:
    fleet = Fleet("restart")
    fleet.push_url = stack.start().push_url
    stack.prom.wait_for_targets_up(JOB)
    sel = '{app="restart",pool="db"}'
    for instance in ("a1", "b2", "c3"):
        fleet.push(instance, buckets=[0.5, 1.0])
    start = stack.scraped(f"{TIMEOUTS}{sel}", 0)
    fleet.push("a1", timeouts=3, checkouts=30, buckets=[0.5, 1.0])
    fleet.push("b2", timeouts=5, checkouts=50, buckets=[0.5, 1.0], final=True)  # exits
    fleet.push("c3", timeouts=2, checkouts=20, buckets=[0.5, 1.0])
    stack.scraped(f"{TIMEOUTS}{sel}", 10)
    fleet.push("a1", timeouts=4, checkouts=40, buckets=[0.5, 1.0])
    stack.scraped(f"{TIMEOUTS}{sel}", 11)
    fleet.push("a1", timeouts=5, checkouts=50, buckets=[0.5, 1.0])  # maybe never scraped
    assert stack.sidecar is not None
    stack.sidecar.kill()  # kill -9; c3 dies too while the sidecar is down

    restarted = stack.start()  # same ports, same state directory
    restored = [json.loads(x) for x in restarted.log_lines if '"state restored"' in x]
    assert len(restored) == 1 and restored[0]["processes"] == 3
    stack.scraped(f'up{{job="{JOB}"}}', 1)
    fleet.push("a1", timeouts=6, checkouts=60, buckets=[0.5, 1.0])
    stack.scraped(f"{TIMEOUTS}{sel}", 13)  # 6 + 5 + 2: c3 stays counted
    # a deploy with other buckets: the old version exits, the new one starts from zero
    fleet.push("a1", timeouts=6, checkouts=60, buckets=[0.5, 1.0], final=True)
    fleet.push("n4", buckets=NEW_BUCKETS)
    stack.scraped(f'count(sqlalchemy_pool_wait_seconds_bucket{{le="0.01",{sel[1:]})', 1)
    fleet.push("n4", timeouts=1, checkouts=7, buckets=NEW_BUCKETS)
    end = stack.scraped(f"{CHECKOUTS}{sel}", 137)  # counted from its first push

    assert stack.over(f"resets({TIMEOUTS}{sel}[W])", start, end)[0]["value"][1] == "0"
    assert stack.over(f"resets({CHECKOUTS}{sel}[W])", start, end)[0]["value"][1] == "0"
    assert stack.over(f"increase({TIMEOUTS}{sel}[W])", start, end)[0]["value"][1] == "14"
    assert stack.over(f"increase({CHECKOUTS}{sel}[W])", start, end)[0]["value"][1] == "137"
    # the histogram restarted with the new layout: one reset, and still the exact count
    count = f"sqlalchemy_pool_wait_seconds_count{sel}"
    assert stack.over(f"resets({count}[W])", start, end)[0]["value"][1] == "1"
    assert stack.over(f"increase({count}[W])", start, end)[0]["value"][1] == "137"
    les = {r["metric"]["le"] for r in stack.prom.query(f"sqlalchemy_pool_wait_seconds_bucket{sel}")}
    assert les == {"0.01", "0.1", "1.0", "+Inf"}


def test_per_process_retirements_and_a_restart_sum_to_the_true_count(stack: Stack) -> None:
    stack.flags += ("--per-process", "--retired-retention", "300")
    fleet = Fleet("workers")
    fleet.push_url = stack.start().push_url
    stack.prom.wait_for_targets_up(JOB)
    sel = '{app="workers",pool="db"}'
    total = f"sum({TIMEOUTS}{sel})"
    fleet.push("w1")
    fleet.push("w2")
    start = stack.scraped(f"count({TIMEOUTS}{sel})", 2, f"{TIMEOUTS}{sel}")
    fleet.push("w1", timeouts=1)
    fleet.push("w2", timeouts=2)
    fleet.push("w2", timeouts=2, final=True)  # a worker recycled: its series stays, frozen
    fleet.push("w3")
    stack.scraped(f"count({TIMEOUTS}{sel})", 3)
    stack.scraped(total, 3)
    fleet.push("w3", timeouts=3)
    fleet.push("w1", timeouts=1, final=True)
    stack.scraped(total, 6)
    assert stack.sidecar is not None
    stack.sidecar.kill()
    stack.start()
    stack.scraped(f'up{{job="{JOB}"}}', 1)
    fleet.push("w3", timeouts=4)
    end = stack.scraped(total, 7, f"{TIMEOUTS}{sel}")

    series = stack.prom.query(f"{TIMEOUTS}{sel}")
    assert {s["metric"]["process"]: s["value"][1] for s in series} == {
        "web-1/1": "1",
        "web-1/2": "2",
        "web-1/3": "4",
    }  # no process="retired" any more
    resets = stack.over(f"resets({TIMEOUTS}{sel}[W])", start, end)
    assert [r["value"][1] for r in resets] == ["0", "0", "0"]
    increase = stack.over(f"sum(increase({TIMEOUTS}{sel}[W]))", start, end)
    assert increase[0]["value"][1] == "7"


def test_a_process_with_other_buckets_changes_nothing_for_the_real_app(
    sidecar_process: RunningSidecar,
) -> None:
    fleet = Fleet("locked")
    fleet.push_url = sidecar_process.push_url
    fleet.push("real1", checkouts=4, buckets=[0.5, 1.0])

    def real_series() -> list[str]:
        """Every counter and histogram line of the app."""
        return sorted(
            line
            for line in sidecar_process.metrics_text().splitlines()
            if 'app="locked"' in line
            and line.split("{")[0].endswith(("_total", "_bucket", "_count", "_sum"))
        )

    before = real_series()
    fleet.push("other9", buckets=NEW_BUCKETS)  # claims the same (app, pool): accepted
    assert real_series() == before
    fleet.push("real1", checkouts=6, buckets=[0.5, 1.0])  # the real app goes on, exactly
    assert sidecar_process.value(CHECKOUTS, app="locked", pool="db") == 6
    buckets = sidecar_process.series("sqlalchemy_pool_wait_seconds_bucket")
    mine = {dict(k)["le"]: v for k, v in buckets.items() if dict(k)["app"] == "locked"}
    assert mine == {"0.5": 6, "1.0": 6, "+Inf": 6}
    # 3 histograms of 2 buckets + Inf, count, sum; one series per counter field
    assert len(before) == 3 * 5 + len(COUNTER_FIELDS)
