"""The sidecar's HTTP listeners: exposition, negotiation, health, API, token, real pushes."""

from __future__ import annotations

import gzip
import json
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import create_engine, text

import sqlalchemy_pool_exporter
from sqlalchemy_pool_exporter.sidecar.server import Sidecar
from tests.sidecars import RunningSidecar
from tests.unit.sidecar_payloads import encode, payload, pool


@pytest.fixture
def sc(sidecar_factory: Callable[..., RunningSidecar]) -> Sidecar:
    return sidecar_factory(token="t0ken").server


def get(url: str, **headers: str) -> tuple[int, dict[str, str], bytes]:
    with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=10) as r:
        return r.status, dict(r.headers), r.read()


def send(sc: Sidecar, doc: dict[str, Any], token: str = "t0ken") -> int:
    request = urllib.request.Request(
        sc.push_url,
        data=encode(doc),
        method="POST",
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return int(response.status)


def samples(body: bytes) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for f in text_string_to_metric_families(body.decode())
        for s in f.samples
    }


def test_metrics_text_has_aggregated_pool_and_self_metrics(sc: Sidecar) -> None:
    assert send(sc, payload("a", pools={"db": pool(checkouts=3)})) == 200
    assert send(sc, payload("b", pid=2, pools={"db": pool(checkouts=4)})) == 200
    status, headers, body = get(sc.metrics_url + "/metrics")
    assert status == 200
    assert headers["Content-Type"].startswith("text/plain; version=0.0.4")
    got = samples(body)
    key = frozenset({("app", "shop"), ("pool", "db")})
    assert got[("sqlalchemy_pool_checkouts_total", key)] == 7
    assert got[("sqlalchemy_pool_processes", key)] == 2
    assert got[("sqlalchemy_pool_max_connections", key)] == 30
    assert got[("sqlalchemy_pool_wait_seconds_count", key)] == 7
    assert got[("pool_exporter_pushes_total", frozenset({("result", "accepted")}))] == 2
    assert got[("pool_exporter_processes", frozenset())] == 2
    assert ("process_resident_memory_bytes", frozenset()) in got
    assert not any("process" in dict(labels) for _, labels in got)


def test_openmetrics_and_gzip_by_negotiation(sc: Sidecar) -> None:
    send(sc, payload("a"))
    _, headers, body = get(
        sc.metrics_url + "/metrics", Accept="application/openmetrics-text; version=1.0.0"
    )
    assert headers["Content-Type"].startswith("application/openmetrics-text")
    assert body.rstrip().endswith(b"# EOF")
    _, headers, body = get(sc.metrics_url + "/metrics", **{"Accept-Encoding": "gzip"})
    assert headers["Content-Encoding"] == "gzip"
    assert b"sqlalchemy_pool_checkouts_total" in gzip.decompress(body)


def test_healthz_on_both_listeners_and_api(sc: Sidecar) -> None:
    send(sc, payload("a", pid=42))
    for base in (sc.metrics_url, sc.push_url.removesuffix("/v1/push")):
        assert json.loads(get(base + "/healthz")[2]) == {"status": "ok", "processes": 1}
    # /api/pools is on the loopback push listener by default, without instance ids.
    assert sc.api_url == sc.push_url.removesuffix("/v1/push") + "/api/pools"
    doc = json.loads(get(sc.api_url)[2])
    assert [p["process"] for p in doc["processes"]] == ["web-1/42"]
    assert [(p["app"], p["pool"]) for p in doc["pools"]] == [("shop", "db")]
    assert "t0ken" not in json.dumps(doc)
    assert '"instance"' not in json.dumps(doc)
    doc = json.loads(get(sc.api_url + "?instances=1")[2])
    assert [p["instance"] for p in doc["processes"]] == ["a"]
    assert [p["instance"] for p in doc["pools"][0]["per_process"]] == ["a"]
    with pytest.raises(urllib.error.HTTPError) as caught:
        get(sc.metrics_url + "/api/pools")
    assert caught.value.code == 404


def test_per_process_series(sidecar_factory: Callable[..., RunningSidecar]) -> None:
    sc = sidecar_factory(per_process=True).server
    send(sc, payload("a", pid=1, pools={"db": pool(checkouts=3)}))
    send(sc, payload("b", pid=2, pools={"db": pool(checkouts=5)}))
    send(sc, payload("b", pid=2, seq=2, final=True, pools={"db": pool(checkouts=6)}))
    got = samples(get(sc.metrics_url + "/metrics")[2])
    checkouts = {
        dict(k)["process"]: v for (n, k), v in got.items() if n == "sqlalchemy_pool_checkouts_total"
    }
    assert checkouts == {"web-1/1": 3, "web-1/2": 6}  # the retired one stays, frozen
    for gauge in ("sqlalchemy_pool_connections", "sqlalchemy_pool_size", "sqlalchemy_pool_info"):
        assert {dict(k)["process"] for (n, k), v in got.items() if n == gauge} == {"web-1/1"}


def test_instrumented_engine_pushes_and_final_push_retires_it(sidecar: RunningSidecar) -> None:
    from sqlalchemy_pool_exporter.instrumentation import runtime

    sc = sidecar.server
    if runtime.pusher() is not None:  # an earlier test's pusher would keep its old URL
        runtime.pusher().stop(final=False)
    engine = create_engine("sqlite://")
    try:
        sqlalchemy_pool_exporter.instrument(
            engine, name="mem", registry=None, push_url=sc.push_url, push_interval=0.2, app="unit"
        )
        pusher = runtime.pusher()
        for _ in range(5):
            with engine.connect() as conn:
                conn.execute(text("select 1"))
        assert pusher.push()
        # the process's identity (and app) is fixed by its first instrument() call
        key = frozenset({("app", runtime.identity().app), ("pool", "mem")})
        got = samples(get(sc.metrics_url + "/metrics")[2])
        assert got[("sqlalchemy_pool_checkouts_total", key)] == 5
        assert got[("sqlalchemy_pool_processes", key)] == 1
        pusher.stop(final=True)  # what the atexit hook does
        got = samples(get(sc.metrics_url + "/metrics")[2])
        assert got[("sqlalchemy_pool_processes", key)] == 0
        assert got[("sqlalchemy_pool_checkouts_total", key)] == 5
        assert sc.aggregator.live_count() == 0
    finally:
        sqlalchemy_pool_exporter.uninstrument(engine)
        engine.dispose()


def test_push_listener_keep_alive_pipelining_expect_and_chunked(sidecar: RunningSidecar) -> None:
    import socket

    sc = sidecar.server
    body = encode(payload("a"))
    request = (
        b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
        b"POST /v1/push HTTP/1.1\r\nContent-Length: %d\r\n"
        b"Expect: 100-continue\r\n\r\n"
        % len(body)
        + body
        + b"POST /v1/push HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    with socket.create_connection(sc.push_address, timeout=10) as conn:
        conn.sendall(request)
        data = b""
        while chunk := conn.recv(65536):
            data += chunk
    assert data.decode().split("\r\n") == [
        "HTTP/1.1 200 OK",
        "Content-Type: application/json",
        "Content-Length: 29",
        "",
        '{"status":"ok","processes":0}HTTP/1.1 100 Continue',
        "",
        "HTTP/1.1 200 OK",
        "Content-Type: application/json",
        "Content-Length: 21",
        "",
        '{"status":"accepted"}HTTP/1.1 411 Length Required',
        "Content-Type: application/json",
        "Content-Length: 35",
        "Connection: close",
        "",
        '{"error":"Content-Length required"}',
    ]
    assert sc.aggregator.live_count() == 1


def test_a_push_to_the_metrics_port_is_told_where_pushes_go(sc: Sidecar) -> None:
    body = encode(payload("a", pools={"db": pool(checkouts=1)}))
    request = urllib.request.Request(sc.metrics_url + "/v1/push", data=body, method="POST")
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(request, timeout=10)
    assert info.value.code == 404
    assert json.loads(info.value.read()) == {
        "error": "pushes go to the push listener (POOL_EXPORTER_PUSH_LISTEN), not the metrics port"
    }
    # nothing was applied
    status, _, api = get(sc.push_url.removesuffix("/v1/push") + "/api/pools")
    assert (status, json.loads(api)["processes"]) == (200, [])
