"""Property: whatever pushes arrive — duplicates, out of order, expiries, finals, pauses,
pools coming and going — every counter is monotone and equals the true total."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sqlalchemy_pool_exporter.sidecar.server import Sidecar
from sqlalchemy_pool_exporter.sidecar.settings import SidecarSettings
from sqlalchemy_pool_exporter.sidecar.views import aggregated_items
from tests.unit.sidecar_payloads import encode, payload, pool

PROCS = ["p0", "p1", "p2", "p3"]
POOLS = ["db", "cache"]
INTERVAL = 1.0


@dataclass
class Model:
    """What each process really counted, and what the sidecar was last told."""

    seq: int = 0
    # pool -> (incarnation, checkouts, leaks); a dropped pool that returns is a new one
    counts: dict[str, list[int]] = field(default_factory=lambda: {p: [0, 0, 0] for p in POOLS})
    reporting: set[str] = field(default_factory=lambda: set(POOLS))
    sent: list[dict[str, Any]] = field(default_factory=list)
    last_seen: float | None = None
    dead: bool = False


def doc_for(name: str, m: Model, final: bool = False) -> dict[str, Any]:
    m.seq += 1
    pools = {
        p: pool(
            checkouts=m.counts[p][1],
            counters={"leaks": m.counts[p][2]},
            gauges={"checked_out": m.counts[p][1] % 3},
        )
        for p in sorted(m.reporting)
    }
    return payload(
        name, seq=m.seq, pools=pools, final=final, interval=INTERVAL, pid=PROCS.index(name)
    )


OPS = st.one_of(
    st.tuples(st.just("count"), st.sampled_from(PROCS), st.sampled_from(POOLS), st.integers(0, 5)),
    st.tuples(st.just("push"), st.sampled_from(PROCS)),
    st.tuples(st.just("duplicate"), st.sampled_from(PROCS)),
    st.tuples(st.just("old"), st.sampled_from(PROCS), st.integers(2, 5)),
    st.tuples(st.just("final"), st.sampled_from(PROCS)),
    st.tuples(st.just("toggle_pool"), st.sampled_from(PROCS), st.sampled_from(POOLS)),
    st.tuples(st.just("reset_pool"), st.sampled_from(PROCS), st.sampled_from(POOLS)),
    st.tuples(st.just("sleep"), st.floats(0.1, 4.0)),
)


class Clock:
    now = 0.0

    def __call__(self) -> float:
        return self.now


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(OPS, min_size=1, max_size=60))
def test_counters_are_monotone_and_exact(ops: list[tuple[Any, ...]]) -> None:
    clock = Clock()
    sc = Sidecar(SidecarSettings(max_processes=10), clock=clock)
    models = {name: Model() for name in PROCS}
    # truth: last accepted values per (process, pool, incarnation)
    accepted: dict[tuple[str, str, int], tuple[int, int]] = {}
    previous: dict[tuple[str, str], tuple[int, int, int]] = {}
    for op in ops:
        kind, *args = op
        if kind == "sleep":
            clock.now += args[0]
        elif kind == "count":
            name, p, n = args
            models[name].counts[p][1] += n
            models[name].counts[p][2] += n // 3
        elif kind == "toggle_pool":
            m = models[args[0]]
            p = args[1]
            if p in m.reporting:
                m.reporting.discard(p)
            elif not m.sent or p not in m.sent[-1]["pools"]:
                # a new engine under the same name counts from zero again; the sidecar saw
                # the old one go (a push without it), so it cannot mistake one for the other
                m.counts[p] = [m.counts[p][0] + 1, 0, 0]
                m.reporting.add(p)
        elif kind == "reset_pool":
            # uninstrument + instrument between two pushes: the same name restarts at zero
            # and the very next push says so (counters below the previous ones)
            name, p = args
            m = models[name]
            if m.dead or p not in m.reporting:
                continue
            m.counts[p] = [m.counts[p][0] + 1, 0, 0]
            doc = doc_for(name, m)
            assert sc.ingest(encode(doc))[0] == 200
            m.sent.append(doc)
            m.last_seen = clock.now
            for q in m.reporting:
                accepted[(name, q, m.counts[q][0])] = (m.counts[q][1], m.counts[q][2])
        elif kind in ("push", "final"):
            name = args[0]
            m = models[name]
            if m.dead:
                continue
            doc = doc_for(name, m, final=kind == "final")
            status, body = sc.ingest(encode(doc))
            assert status == 200, body
            m.sent.append(doc)
            m.last_seen = clock.now
            m.dead = kind == "final"
            for p in m.reporting:
                accepted[(name, p, m.counts[p][0])] = (m.counts[p][1], m.counts[p][2])
        elif kind == "duplicate" and models[args[0]].sent:
            status, _ = sc.ingest(encode(models[args[0]].sent[-1]))
            assert status == 409
        elif kind == "old" and len(models[args[0]].sent) >= args[1]:
            status, _ = sc.ingest(encode(models[args[0]].sent[-args[1]]))
            assert status == 409
        check(sc, clock, models, accepted, previous)


def check(
    sc: Sidecar,
    clock: Clock,
    models: dict[str, Model],
    accepted: dict[tuple[str, str, int], tuple[int, int]],
    previous: dict[tuple[str, str], tuple[int, int, int]],
) -> None:
    sc.aggregator.expire()
    items, counts = aggregated_items(sc.aggregator)
    got = dict(items)
    live = {
        n
        for n, m in models.items()
        if m.sent and not m.dead and clock.now - (m.last_seen or 0) <= 3 * INTERVAL
    }
    processes = {(a, p): n for a, p, n in counts}
    for p in POOLS:
        if ("shop", p) not in got:
            assert not any(k[1] == p for k in accepted)
            continue
        item = got[("shop", p)]
        checkouts = sum(v[0] for k, v in accepted.items() if k[1] == p)
        leaks = sum(v[1] for k, v in accepted.items() if k[1] == p)
        c = item["counters"]
        assert (c["checkouts"], c["leaks"]) == (checkouts, leaks)
        wait = item["histograms"]["wait_seconds"]
        assert wait["count"] == checkouts == wait["counts"][-1] == wait["counts"][0]
        before = previous.get(("shop", p), (0, 0, 0))
        assert c["checkouts"] >= before[0] and c["leaks"] >= before[1]
        assert wait["count"] >= before[2]
        previous[("shop", p)] = (c["checkouts"], c["leaks"], wait["count"])
        reporting = [n for n in live if p in models[n].sent[-1]["pools"]]
        assert processes[("shop", p)] == len(reporting)
        assert item["gauges"]["checked_out"] == sum(
            models[n].sent[-1]["pools"][p]["gauges"]["checked_out"] for n in reporting
        )
    assert sc.aggregator.live_count() == len(live)
