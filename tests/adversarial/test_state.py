"""State-level attacks: cardinality, poisoned numbers, per-process output at scale."""

from __future__ import annotations

import http.client
import threading
import time
from collections.abc import Callable
from typing import Any

from tests.adversarial.attack import Target, push, record, scrape, wait_for
from tests.unit.sidecar_payloads import BUCKETS, encode, histogram, payload, pool


def _pushers(target: Target, bodies: list[bytes], threads: int = 4) -> list[tuple[int, float]]:
    """Send every body over ``threads`` keep-alive connections; (status, seconds) each."""
    host, port = target.address("push")
    results: list[tuple[int, float]] = []

    def run(part: list[bytes]) -> None:
        conn = http.client.HTTPConnection(host, port, timeout=30)
        for body in part:
            begin = time.monotonic()
            conn.request("POST", "/v1/push", body)
            response = conn.getresponse()
            response.read()
            results.append((response.status, time.monotonic() - begin))
            if response.getheader("Connection") == "close":
                conn.close()
                conn = http.client.HTTPConnection(host, port, timeout=30)
        conn.close()

    workers = [threading.Thread(target=run, args=(bodies[k::threads],)) for k in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return results


def test_distinct_apps_are_dropped_after_retention(sidecar: Callable[..., Target]) -> None:
    target = sidecar("--group-retention", "2")
    baseline = len(scrape(target)[1])
    stop, peak_rss = threading.Event(), [0.0]

    def watch() -> None:
        while not stop.wait(0.05):
            peak_rss[0] = max(peak_rss[0], target.rss_mb())

    watcher = threading.Thread(target=watch)
    watcher.start()
    # 10,000 apps push once each and fall silent (a 0.2 s interval: expired after 0.6 s).
    bodies = [encode(payload(f"i{n}", app=f"app-{n:05d}", interval=0.2)) for n in range(10_000)]
    statuses = [status for status, _ in _pushers(target, bodies)]
    peak = len(scrape(target)[1])
    stop.set()
    watcher.join()
    # Silent for three intervals, then 2 s of retention: every group is gone.
    wait_for(lambda: target.plain("pool_exporter_groups") == 0, timeout=15, interval=0.2)
    refused = {
        dict(labels)["reason"]: value
        for labels, value in target.series("pool_exporter_push_rejected_total").items()
        if value
    }
    # No app was locked out for good: whatever was refused was refused for live state.
    assert set(refused) <= {"too_many_groups", "too_many_processes"}
    assert sum(refused.values()) == statuses.count(429) == len(statuses) - statuses.count(200)
    assert push(target.push_url, encode(payload("newcomer", app="newcomer")))[0] == 200
    after = len(scrape(target)[1])
    assert after < baseline + 20_000, (baseline, after)
    record("10,000 apps: accepted / refused", f"{statuses.count(200)} / {refused}")
    record("10,000 apps: /metrics at peak -> after retention", f"{peak:,} -> {after:,} bytes")
    record("10,000 apps: peak RSS", f"{peak_rss[0]:.0f} MB")


def test_poisoned_numbers_are_refused(sidecar: Callable[..., Target]) -> None:
    target = sidecar()
    url = target.push_url
    assert push(url, encode(payload("a", pools={"db": pool(checkouts=10)})))[0] == 200
    huge_sum = histogram([1] + [0] * len(BUCKETS), total=1e300)
    poisons = [
        payload("b", pools={"db": pool(checkouts=2**63 - 1)}),
        payload("b", pools={"db": pool(hist={"wait_seconds": huge_sum})}),
        payload("a", seq=2, pools={"db": pool(checkouts=2**52)}),  # +4.5e15 in a moment
    ]
    assert [push(url, encode(doc))[0] for doc in poisons] == [400, 400, 400]
    assert push(url, encode(payload("a", seq=3, pools={"db": pool(checkouts=11)})))[0] == 200
    assert target.value("sqlalchemy_pool_checkouts_total", app="shop", pool="db") == 11
    assert target.value("pool_exporter_push_rejected_total", reason="invalid_value") == 2
    assert target.value("pool_exporter_push_rejected_total", reason="implausible_value") == 1


def test_per_process_output_at_scale(sidecar: Callable[..., Target]) -> None:
    target = sidecar("--per-process", "--max-state-bytes", str(256 * 1_048_576))
    pools = {f"postgresql://db:5432/db{n:02d}": pool(checkouts=n) for n in range(64)}
    docs = [payload(f"p{n:04d}", pid=n, interval=3600, pools=pools) for n in range(1000)]
    loaded = _pushers(target, [encode(doc) for doc in docs])
    assert {status for status, _ in loaded} == {200}
    status, body, seconds = scrape(target)
    assert status == 200 and seconds <= 2.0
    assert target.value("pool_exporter_per_process_limited") == 1
    assert (target.value("pool_exporter_limit_hits_total", limit="series") or 0) >= 1
    assert b'process="' not in body  # aggregated series instead of millions of samples
    (line,) = [e for e in target.events("limit reached") if e["limit"] == "series"]
    assert line["max_series"] == 100_000 and line["series"] > 4_000_000

    # Meanwhile: a scrape every half second (a fast Prometheus scrapes every 15 s) and
    # eight concurrent /api/pools requests; pushes go on.
    stop, busy, latencies, api = threading.Event(), [0.0], [], []

    def scraper() -> None:
        while not stop.wait(0.5):
            busy[0] = max(busy[0], scrape(target)[2])

    def api_reader() -> None:
        host, port = target.address("push")
        conn = http.client.HTTPConnection(host, port, timeout=60)
        conn.request("GET", "/api/pools")
        response = conn.getresponse()
        api.append((response.status, len(response.read())))

    readers = [threading.Thread(target=scraper)] + [
        threading.Thread(target=api_reader) for _ in range(8)
    ]
    for reader in readers:
        reader.start()
    deadline, n = time.monotonic() + 8, 0
    while time.monotonic() < deadline:
        doc: dict[str, Any] = docs[n % 1000]
        doc["seq"] += 1
        code, spent = push(target.push_url, encode(doc), timeout=10)
        assert code == 200
        latencies.append(spent)
        n += 1
    stop.set()
    for reader in readers:
        reader.join(60)
    latencies.sort()
    p99 = latencies[int(len(latencies) * 0.99)]
    assert p99 <= 0.1, p99
    assert {s for s, _ in api} <= {200, 503} and 200 in {s for s, _ in api}
    assert max(size for s, size in api if s == 200) < 10_000_000
    assert busy[0] <= 2.0
    record("1,000 x 64 per-process: scrape", f"{seconds:.2f} s, {len(body):,} bytes (ceiling)")
    record(
        "1,000 x 64 per-process: push p50 / p99 during scrapes and 8 /api/pools",
        f"{latencies[len(latencies) // 2] * 1000:.0f} / {p99 * 1000:.0f} ms "
        f"({len(latencies)} pushes of {len(encode(docs[0])):,} bytes)",
    )
    record("1,000 x 64 per-process: /api/pools", f"{sorted(s for s, _ in api)}")
    record("1,000 x 64 per-process: RSS", f"{target.rss_mb():.0f} MB")
