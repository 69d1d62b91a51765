"""Every bad push over real HTTP: its status, its one-line error, its count, no state change."""

from __future__ import annotations

import http.client
import json
from collections.abc import Iterator
from typing import Any

import pytest

from sqlalchemy_pool_exporter.sidecar.server import Sidecar
from sqlalchemy_pool_exporter.sidecar.views import aggregated_items
from tests.sidecars import start_sidecar
from tests.unit.sidecar_payloads import BUCKETS, encode, histogram, mutate, payload, pool

TOKEN = "s3cret-token"
GOOD = payload("a", seq=5, pools={"db": pool(checkouts=10)})


@pytest.fixture(scope="module")
def sc() -> Iterator[Sidecar]:
    running = start_sidecar(
        token=TOKEN, max_pools=4, max_body_bytes=64 * 1024, max_label_length=64, max_processes=2
    )
    sidecar = running.server
    for doc in (GOOD, payload("b", seq=1, pools={"db": pool(checkouts=1)})):
        assert post(sidecar, encode(doc))[0] == 200
    yield sidecar
    running.stop()


def post(
    sc: Sidecar, body: bytes, *, token: str | None = TOKEN, length: bool = True
) -> tuple[int, dict[str, Any], bytes]:
    conn = http.client.HTTPConnection(*sc.push_address, timeout=10)
    try:
        conn.putrequest("POST", "/v1/push")
        conn.putheader("Content-Type", "application/json")
        if token is not None:
            conn.putheader("Authorization", f"Bearer {token}")
        if length:
            conn.putheader("Content-Length", str(len(body)))
        conn.endheaders()
        if length:
            conn.send(body)
        response = conn.getresponse()
        raw = response.read()
        return response.status, json.loads(raw), raw
    finally:
        conn.close()


def state(sc: Sidecar) -> str:
    items, counts = aggregated_items(sc.aggregator)
    procs = sorted((k, p.push.seq) for k, p in sc.aggregator.processes.items())
    return json.dumps([items, counts, procs, list(sc.aggregator.tombstones)], sort_keys=True)


def with_pools(n: int) -> dict[str, Any]:
    return payload("a", seq=6, pools={f"db{i}": pool() for i in range(n)})


def bad_hist(**fields: Any) -> dict[str, Any]:
    h = histogram()
    h.update(fields)
    return mutate(GOOD, ["pools", "db", "histograms", "use_seconds"], h) | {"seq": 6}


G = ["pools", "db"]
CASES: list[tuple[str, bytes, int, str, str]] = [
    ("not json", b"{not json", 400, "malformed_json", "body is not valid JSON"),
    ("not utf-8", b"\xff\xfe\x00", 400, "malformed_json", "body is not valid JSON"),
    ("array", b"[1, 2]", 400, "malformed_json", "body is not a JSON object"),
    ("empty", b"", 400, "malformed_json", "body is not valid JSON"),
    ("schema 2", encode(GOOD | {"schema": 2}), 400, "schema_version", "schema must be 1"),
    (
        "schema missing",
        encode(mutate(GOOD, ["schema"], ...)),
        400,
        "schema_version",
        "schema must be 1",
    ),
    ("schema as string", encode(GOOD | {"schema": "1"}), 400, "schema_version", "schema must be 1"),
    (
        "NaN",
        encode(mutate(GOOD, [*G, "histograms", "wait_seconds", "sum"], 1.5)).replace(
            b"1.5", b"NaN"
        ),
        400,
        "invalid_value",
        "body: NaN and Infinity are not allowed",
    ),
    (
        "overflowing float",
        encode(mutate(GOOD, [*G, "gauges", "oldest_checkout_seconds"], 1.25)).replace(
            b"1.25", b"1e999"
        ),
        400,
        "invalid_value",
        "pools['db'].gauges.oldest_checkout_seconds: expected a finite non-negative number",
    ),
    (
        "negative counter",
        encode(mutate(GOOD, [*G, "counters", "checkouts"], -1)),
        400,
        "invalid_value",
        "pools['db'].counters.checkouts: expected a non-negative integer",
    ),
    (
        "fractional counter",
        encode(mutate(GOOD, [*G, "counters", "leaks"], 1.5)),
        400,
        "invalid_value",
        "pools['db'].counters.leaks: expected a non-negative integer",
    ),
    (
        "boolean counter",
        encode(mutate(GOOD, [*G, "counters", "leaks"], True)),
        400,
        "invalid_value",
        "pools['db'].counters.leaks: expected a non-negative integer",
    ),
    (
        "missing counter",
        encode(mutate(GOOD, [*G, "counters", "gc_reclaimed"], ...)),
        400,
        "invalid_value",
        "pools['db'].counters.gc_reclaimed: expected a non-negative integer",
    ),
    (
        "negative gauge",
        encode(mutate(GOOD, [*G, "gauges", "pending"], -2)),
        400,
        "invalid_value",
        "pools['db'].gauges.pending: expected a non-negative integer",
    ),
    (
        "zero interval",
        encode(GOOD | {"interval": 0}),
        400,
        "invalid_value",
        "interval: expected seconds in (0, 3600]",
    ),
    (
        "pools not an object",
        encode(GOOD | {"pools": []}),
        400,
        "invalid_value",
        "pools: expected an object",
    ),
    (
        "long app",
        encode(mutate(GOOD, ["process", "app"], "x" * 65)),
        400,
        "label_too_long",
        "process.app: longer than 64 characters",
    ),
    (
        "long pool name",
        encode(GOOD | {"pools": {"p" * 65: pool()}}),
        400,
        "label_too_long",
        "pool name: longer than 64 characters",
    ),
    (
        "long info value",
        encode(mutate(GOOD, [*G, "info", "host"], "h" * 65)),
        400,
        "label_too_long",
        "pools['db'].info.host: longer than 64 characters",
    ),
    ("too many pools", encode(with_pools(5)), 400, "too_many_pools", "more than 4 pools"),
    ("body too large", b" " * (64 * 1024 + 1), 413, "body_too_large", "body over 65536 bytes"),
    (
        "unsorted buckets",
        encode(bad_hist(buckets=[1.0, 0.5, *BUCKETS[2:]])),
        400,
        "invalid_value",
        "pools['db'].histograms.use_seconds.buckets: bounds must be positive "
        "and strictly increasing",
    ),
    (
        "decreasing counts",
        encode(bad_hist(counts=[2, 1] + [1] * (len(BUCKETS) - 1), count=1)),
        400,
        "invalid_value",
        "pools['db'].histograms.use_seconds.counts: cumulative counts must not decrease",
    ),
    (
        "count mismatch",
        encode(bad_hist(count=3)),
        400,
        "invalid_value",
        "pools['db'].histograms.use_seconds.count: must equal the +Inf bucket count",
    ),
    (
        "counts too short",
        encode(bad_hist(counts=[0])),
        400,
        "invalid_value",
        "pools['db'].histograms.use_seconds.counts: expected one count per bound plus +Inf",
    ),
    ("duplicate seq", encode(GOOD), 409, "stale_sequence", "seq 5 is not above 5 for this process"),
    (
        "older seq",
        encode(GOOD | {"seq": 4}),
        409,
        "stale_sequence",
        "seq 4 is not above 5 for this process",
    ),
    (
        "instance changes app",
        encode(payload("a", seq=6, app="other", pools={"db": pool(checkouts=10)})),
        400,
        "identity_changed",
        "process.app changed for this instance",
    ),
    (
        "instance changes pid",
        encode(payload("a", seq=6, pid=101, pools={"db": pool(checkouts=10)})),
        400,
        "identity_changed",
        "process.host or pid changed for this instance",
    ),
    (
        "one process too many",
        encode(payload("c")),
        429,
        "too_many_processes",
        "more than 2 live processes",
    ),
]


@pytest.mark.parametrize(
    ("body", "status", "reason", "error"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_bad_push_is_rejected_counted_and_changes_nothing(
    sc: Sidecar, body: bytes, status: int, reason: str, error: str
) -> None:
    before = state(sc)
    rejected_before = sc.counters.rejected[reason]
    got_status, doc, raw = post(sc, body)
    assert (got_status, doc) == (status, {"error": error})
    assert b"\n" not in raw
    assert state(sc) == before
    assert sc.counters.rejected[reason] == rejected_before + 1


@pytest.mark.parametrize("token", [None, "wrong", TOKEN + "x"])
def test_push_without_the_token_is_unauthorized(sc: Sidecar, token: str | None) -> None:
    before = state(sc)
    count = sc.counters.rejected["unauthorized"]
    status, doc, _ = post(
        sc, encode(payload("a", seq=99, pools={"db": pool(checkouts=50)})), token=token
    )
    assert (status, doc) == (401, {"error": "missing or wrong bearer token"})
    assert state(sc) == before
    assert sc.counters.rejected["unauthorized"] == count + 1


def test_push_without_content_length_is_refused(sc: Sidecar) -> None:
    before = state(sc)
    status, doc, _ = post(sc, b"", length=False)
    assert (status, doc) == (411, {"error": "Content-Length required"})
    assert state(sc) == before


def test_wrong_paths_and_methods(sc: Sidecar) -> None:
    conn = http.client.HTTPConnection(*sc.push_address, timeout=10)
    conn.request("GET", "/v1/push")
    response = conn.getresponse()
    assert (response.status, json.loads(response.read())) == (
        405,
        {"error": "POST pushes to /v1/push"},
    )
    conn.close()
    conn = http.client.HTTPConnection(*sc.metrics_address, timeout=10)
    conn.request("GET", "/nothing")
    response = conn.getresponse()
    assert (response.status, json.loads(response.read())) == (
        404,
        {"error": "no such path '/nothing'"},
    )
    conn.close()


def test_good_push_after_all_that_is_still_accepted(sc: Sidecar) -> None:
    status, doc, _ = post(sc, encode(payload("a", seq=100, pools={"db": pool(checkouts=12)})))
    assert (status, doc) == (200, {"status": "accepted"})
    items, _ = aggregated_items(sc.aggregator)
    assert dict(items)[("shop", "db")]["counters"]["checkouts"] == 13
