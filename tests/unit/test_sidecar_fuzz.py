"""Fuzz: 10,000 random and mutated pushes in-process plus a share over real HTTP.

The sidecar must answer every one with 200 or a 4xx (never a 500, never die), and its
state must stay consistent: per (app, pool) and per process label, total = retired + live
contributions, exactly; gauge sums match the live processes; nothing shown went down.
"""

from __future__ import annotations

import contextlib
import copy
import json
import random
import socket
import urllib.error
import urllib.request
from operator import ge
from pathlib import Path
from typing import Any

from sqlalchemy_pool_exporter.protocol.catalog import SUM_GAUGES
from sqlalchemy_pool_exporter.protocol.records import PoolData
from sqlalchemy_pool_exporter.sidecar.ledger import Ledger
from sqlalchemy_pool_exporter.sidecar.server import Sidecar
from sqlalchemy_pool_exporter.sidecar.settings import SidecarSettings
from sqlalchemy_pool_exporter.sidecar.totals import Layout, layout_of, zero_hists
from sqlalchemy_pool_exporter.sidecar.views import aggregated_items
from tests.unit.sidecar_payloads import payload, pool

WEIRD: list[Any] = [
    -1,
    -0.5,
    0,
    1.5,
    2**70,
    1e308,
    True,
    False,
    None,
    "",
    "x" * 300,
    [],
    {},
    [1, 2],
    {"a": 1},
    "NaN",
    3,
    10**6,
]
OK_STATUSES = {200, 400, 401, 409, 411, 413, 429}


def leaves(doc: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    if isinstance(doc, dict):
        out = [(*path, k) for k in doc]
        for k, v in doc.items():
            out += leaves(v, (*path, k))
        return out
    if isinstance(doc, list):
        out = [(*path, i) for i in range(len(doc))]
        for i, v in enumerate(doc):
            out += leaves(v, (*path, i))
        return out
    return []


def mutate(rng: random.Random, doc: dict[str, Any]) -> bytes:
    kind = rng.random()
    if kind < 0.1:
        return bytes(rng.getrandbits(8) for _ in range(rng.randint(0, 200)))
    raw = json.dumps(doc).encode()
    if kind < 0.2:
        cut = rng.randint(0, len(raw))
        return raw[:cut]
    if kind < 0.3:
        data = bytearray(raw)
        for _ in range(rng.randint(1, 5)):
            data[rng.randrange(len(data))] = rng.getrandbits(8)
        return bytes(data)
    doc = copy.deepcopy(doc)
    for _ in range(rng.randint(1, 3)):
        path = rng.choice(leaves(doc))
        target = doc
        for key in path[:-1]:
            target = target[key]
        if rng.random() < 0.2 and isinstance(target, dict):
            del target[path[-1]]
        else:
            target[path[-1]] = copy.deepcopy(rng.choice(WEIRD))
    return json.dumps(doc).encode()


class Driver:
    """Valid traffic from a few processes, with their own growing counters."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.seq: dict[str, int] = {}
        self.count: dict[tuple[str, str], int] = {}

    def valid(self) -> dict[str, Any]:
        inst = f"i{self.rng.randrange(12)}"
        self.seq[inst] = self.seq.get(inst, 0) + 1
        names = self.rng.sample(["db", "cache", "ro"], self.rng.randint(0, 3))
        pools = {}
        for name in names:
            n = self.count[(inst, name)] = self.count.get((inst, name), 0) + self.rng.randint(0, 3)
            pools[name] = pool(checkouts=n, gauges={"checked_out": n % 4})
        return payload(
            inst,
            seq=self.seq[inst],
            pools=pools,
            interval=0.5,
            final=self.rng.random() < 0.03,
            pid=int(inst[1:]),
        )


def check_ledger(ledger: Ledger, members: list[PoolData]) -> None:
    """total = retired + the live members' latest values, exactly, layout by layout."""
    expect = ledger.retired.copy()
    for data in members:
        expect.add(data, None, layout_of(data))
    assert expect.counters == ledger.total.counters
    for layout in expect.hists.keys() | ledger.total.hists.keys():
        want = expect.hists.get(layout) or zero_hists(layout)
        for name, h in (ledger.total.hists.get(layout) or zero_hists(layout)).items():
            assert (list(h.counts), h.count) == (list(want[name].counts), want[name].count)
            assert all(c >= 0 for c in h.counts)
    live: dict[Layout, int] = {}
    for data in members:
        live[layout_of(data)] = live.get(layout_of(data), 0) + 1
    assert ledger.live == live


def check_monotone(sc: Sidecar, before: dict[tuple[str, ...], Any]) -> None:
    """What a scrape shows never goes down: every counter, and each shown histogram while
    the same layout stays shown (a switch of layout is a counter reset by design)."""
    agg = sc.aggregator
    with agg.lock:
        for key, group in agg.groups.items():
            for label, ledger in [("", group.ledger), *(group.series or {}).items()]:
                where = (*key, label)
                counters = ledger.total.counters
                old = before.get(where)
                hists = ledger.histograms()
                if old is not None:
                    assert all(counters[n] >= old[0][n] for n in counters), where
                    if old[1] == ledger.shown:
                        for name, h in hists.items():
                            assert all(map(ge, h["counts"], old[2][name]["counts"])), where
                            assert h["sum"] >= old[2][name]["sum"], where
                before[where] = (dict(counters), ledger.shown, hists)


def check_consistent(sc: Sidecar) -> None:
    agg = sc.aggregator
    with agg.lock:
        for group in agg.groups.values():
            for instance, data in group.members.items():
                assert agg.processes[instance].push.pools[group.pool] is data
            check_ledger(group.ledger, list(group.members.values()))
            shown = {group.ledger.shown: group.ledger}
            for label, ledger in (group.series or {}).items():
                mine = [
                    d for i, d in group.members.items() if agg.processes[i].push.process == label
                ]
                check_ledger(ledger, mine)
                shown[ledger.shown] = ledger
            for name in SUM_GAUGES:
                assert group.sums[name] == sum(m.gauges[name] for m in group.members.values())
        for instance, proc in agg.processes.items():
            for name in proc.push.pools:
                assert instance in agg.groups[(proc.push.app, name)].members


def test_ten_thousand_mutated_pushes_in_process() -> None:
    rng = random.Random(20261121)
    sc = Sidecar(
        SidecarSettings(max_processes=8, max_pools=4, max_label_length=64, per_process=True)
    )
    driver = Driver(rng)
    seen: dict[int, int] = {}
    before: dict[tuple[str, ...], Any] = {}
    for i in range(10_000):
        doc = driver.valid()
        body = json.dumps(doc).encode() if rng.random() < 0.4 else mutate(rng, doc)
        status, response = sc.ingest(body)
        assert status in OK_STATUSES, (status, response)
        assert set(response) == ({"status"} if status == 200 else {"error"})
        seen[status] = seen.get(status, 0) + 1
        check_monotone(sc, before)
        if i % 250 == 0:
            check_consistent(sc)
    check_consistent(sc)
    items, _ = aggregated_items(sc.aggregator)
    assert items  # valid traffic got through
    assert seen[200] > 2000 and seen[400] > 2000 and seen.get(409, 0) > 0


def test_mutated_pushes_and_garbage_over_http_then_a_restart(tmp_path: Path) -> None:
    rng = random.Random(7)
    settings = SidecarSettings(
        listen="127.0.0.1:0",
        push_listen="127.0.0.1:0",
        max_body_bytes=8192,
        per_process=True,
        state_dir=str(tmp_path),
    )
    sc = Sidecar(settings).start()
    try:
        driver = Driver(rng)
        before: dict[tuple[str, ...], Any] = {}
        for _ in range(400):
            doc = driver.valid()
            body = json.dumps(doc).encode() if rng.random() < 0.3 else mutate(rng, doc)
            request = urllib.request.Request(sc.push_url, data=body, method="POST")
            try:
                with urllib.request.urlopen(request, timeout=10) as response:
                    status = response.status
            except urllib.error.HTTPError as exc:
                status = exc.code
                assert set(json.loads(exc.read())) == {"error"}
            assert status in OK_STATUSES
            check_monotone(sc, before)
        for _ in range(100):  # raw garbage on the socket: bad request lines, bad headers
            with socket.create_connection(sc.push_address, timeout=5) as raw:
                raw.sendall(
                    bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 300))) + b"\r\n\r\n"
                )
                with contextlib.suppress(TimeoutError):
                    raw.recv(1024)
        check_monotone(sc, before)
        check_consistent(sc)
        with urllib.request.urlopen(sc.metrics_url + "/healthz", timeout=10) as response:
            assert response.status == 200
        with urllib.request.urlopen(sc.metrics_url + "/metrics", timeout=10) as response:
            assert b"sqlalchemy_pool_checkouts_total" in response.read()
    finally:
        sc.stop()
    # whatever the fuzzing left behind survives a restart: every series, nothing lower
    again = Sidecar(settings).start()
    try:
        check_monotone(again, before)
        check_consistent(again)
        with again.aggregator.lock:
            groups = again.aggregator.groups.values()
            now = {(g.app, g.pool, label) for g in groups for label in ["", *(g.series or {})]}
        assert now == set(before)
    finally:
        again.stop()
