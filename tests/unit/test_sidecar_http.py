"""The sidecar's HTTP bounds on real sockets: deadlines, connection and byte caps, the
render queue, slow readers, and where /api/pools is served."""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector

from sqlalchemy_pool_exporter.sidecar.server import Sidecar
from sqlalchemy_pool_exporter.sidecar.settings import SidecarSettings
from tests.unit.sidecar_payloads import encode, payload


@pytest.fixture
def started() -> Iterator[Callable[..., Sidecar]]:
    running: list[Sidecar] = []

    def start(**settings: Any) -> Sidecar:
        values = {"listen": "127.0.0.1:0", "push_listen": "127.0.0.1:0", **settings}
        sidecar = Sidecar(SidecarSettings(**values)).start()
        running.append(sidecar)
        return sidecar

    yield start
    for sidecar in running:
        sidecar.stop()


def wait_for(predicate: Callable[[], Any], timeout: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout
    while not (result := predicate()):
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)
    return result


def post(sc: Sidecar, doc: dict[str, Any], timeout: float = 5.0) -> int:
    request = urllib.request.Request(sc.push_url, data=encode(doc), method="POST")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code
    except (urllib.error.URLError, OSError):
        return 0  # closed on us: no room for this connection


def hits(sc: Sidecar, limit: str) -> float:
    with urllib.request.urlopen(sc.metrics_url + "/metrics", timeout=10) as response:
        text = response.read().decode()
    return next(
        s.value
        for f in text_string_to_metric_families(text)
        for s in f.samples
        if s.name == "pool_exporter_limit_hits_total" and s.labels == {"limit": limit}
    )


def read_all(conn: socket.socket) -> bytes:
    data = b""
    try:
        while chunk := conn.recv(65536):
            data += chunk
    except ConnectionResetError:
        pass
    return data


def test_a_trickled_request_ends_at_its_deadline(started: Callable[..., Sidecar]) -> None:
    sc = started(request_timeout=0.5)
    with socket.create_connection(sc.push_address, timeout=10) as conn:
        begin = time.monotonic()
        conn.sendall(b"POST /v1/push HTTP/1.1\r\nContent-Length: 1000\r\n\r\n{")
        answer = b""
        while not answer and time.monotonic() - begin < 5:
            try:
                conn.sendall(b" ")  # a byte every 50 ms does not extend the deadline
            except OSError:
                break
            conn.settimeout(0.05)
            with contextlib.suppress(TimeoutError):
                answer = conn.recv(65536)
        conn.settimeout(5)
        answer += read_all(conn)
        elapsed = time.monotonic() - begin
    assert answer.split(b"\r\n")[0] == b"HTTP/1.1 408 Request Timeout"
    assert answer.endswith(b'{"error":"request not complete in time"}')
    assert 0.5 <= elapsed < 1.5
    assert hits(sc, "request_timeout") == 1


def test_a_silent_connection_is_closed_at_the_deadline(started: Callable[..., Sidecar]) -> None:
    sc = started(request_timeout=0.3)
    with socket.create_connection(sc.metrics_address, timeout=5) as conn:
        assert read_all(conn).split(b"\r\n")[0] == b"HTTP/1.1 408 Request Timeout"


def test_connections_beyond_the_cap_replace_idle_ones(started: Callable[..., Sidecar]) -> None:
    sc = started(max_connections=4)
    idle = [socket.create_connection(sc.push_address, timeout=5) for _ in range(4)]
    try:
        wait_for(lambda: sc._open()["push"] == 4)  # all four accepted: the cap is reached
        # Once they have idled long enough to be overdue, a pusher takes one's place. The
        # answer may be slow on a loaded machine: a refusal is retried, a slow one awaited.
        assert wait_for(lambda: post(sc, payload("a")) == 200)
        assert hits(sc, "connections") >= 1
        closed = []
        for conn in idle:
            conn.settimeout(0.2)
            with contextlib.suppress(TimeoutError):
                closed.append(conn.recv(65536).split(b"\r\n")[0])
        assert closed and set(closed) == {b"HTTP/1.1 503 Service Unavailable"}
    finally:
        for conn in idle:
            conn.close()


def test_a_burst_up_to_the_cap_is_accepted_whole(started: Callable[..., Sidecar]) -> None:
    # Each connection counts once, whatever the moment: a connection being set up must
    # not count both as pending and as open, which refused some below the cap (in about
    # one fresh sidecar in fifteen on this burst).
    for _ in range(60):
        sc = started(max_connections=32)
        burst = [socket.create_connection(sc.push_address, timeout=5) for _ in range(32)]
        try:
            assert wait_for(lambda sc=sc: sc._open()["push"] == 32, timeout=5)
            assert hits(sc, "connections") == 0
        finally:
            for conn in burst:
                conn.close()
            sc.stop()


def _refused_while_fresh(sc: Sidecar) -> bytes | None:
    """A request needing room while a fresh, still-sending request holds the budget.

    The holder is young and keeps sending, so nothing may be closed for room; the
    answer, or None if this machine was too slow to ask within the holder's first 0.2 s.
    """
    holder = socket.create_connection(sc.push_address, timeout=5)
    stop = threading.Event()

    def keep_sending() -> None:
        with contextlib.suppress(OSError):
            while not stop.wait(0.01):
                holder.sendall(b" ")

    begin = time.monotonic()
    holder.sendall(b"POST /v1/push HTTP/1.1\r\nContent-Length: 65000\r\n\r\n" + b" " * 1000)
    sender = threading.Thread(target=keep_sending)
    sender.start()
    try:
        wait_for(lambda: sc._http is not None and sc._http.budget.used == 65000)
        with socket.create_connection(sc.push_address, timeout=5) as second:
            second.sendall(b"POST /v1/push HTTP/1.1\r\nContent-Length: %d\r\n\r\n" % 10_000)
            second.settimeout(0.2)
            with contextlib.suppress(TimeoutError):
                answer = second.recv(65536)
                if time.monotonic() - begin < 0.2:
                    return answer
        return None
    finally:
        stop.set()
        sender.join()
        holder.close()


def test_request_bytes_in_flight_are_bounded(started: Callable[..., Sidecar]) -> None:
    sc = started(max_buffered_bytes=65536, max_body_bytes=65536)
    assert len(encode(payload("a"))) > 65536 - 65000  # so a push needs the holder's room
    answer = next(a for a in (_refused_while_fresh(sc) for _ in range(5)) if a is not None)
    assert answer.split(b"\r\n")[0] == b"HTTP/1.1 503 Service Unavailable"
    assert answer.endswith(b'{"error":"sidecar busy: too many request bytes in flight"}')
    # A holder whose bytes stop coming is closed to make room for a new request.
    wait_for(lambda: sc._http is not None and sc._http.budget.used == 0)
    with socket.create_connection(sc.push_address, timeout=5) as holder:
        holder.sendall(b"POST /v1/push HTTP/1.1\r\nContent-Length: 65000\r\n\r\n" + b" " * 1000)
        wait_for(lambda: sc._http is not None and sc._http.budget.used == 65000)
        assert wait_for(lambda: post(sc, payload("a")) == 200)
        assert read_all(holder).endswith(b'{"error":"request too slow; closed to make room"}')
    assert hits(sc, "buffered_bytes") >= 2


class Slow(Collector):
    """A collector that renders only once released: a scrape that takes as long as wanted."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.entered = threading.Semaphore(0)

    def collect(self) -> Iterator[GaugeMetricFamily]:
        self.entered.release()
        self.release.wait(30)
        yield GaugeMetricFamily("slow_test_metric", "Rendered once released.", value=1)


def test_renders_queue_boundedly_and_never_hold_pushes_up(
    started: Callable[..., Sidecar],
) -> None:
    sc = started()
    slow = Slow()
    sc.registry.register(slow)
    results: list[int] = []

    def scrape() -> None:
        try:
            with urllib.request.urlopen(sc.metrics_url + "/metrics", timeout=20) as response:
                results.append(response.status)
        except urllib.error.HTTPError as exc:
            results.append(exc.code)

    threads = [threading.Thread(target=scrape) for _ in range(5)]  # one renders, four wait
    for thread in threads:
        thread.start()
    assert slow.entered.acquire(timeout=10)
    wait_for(lambda: sc._http is not None and len(sc._http.lanes["metrics"].waiting) == 4)
    extra = threading.Thread(target=scrape)
    extra.start()
    extra.join(10)
    assert results == [503]
    begin = time.monotonic()
    assert post(sc, payload("a")) == 200  # pushes do not wait for renders
    assert time.monotonic() - begin < 1.0
    slow.release.set()
    for thread in threads:
        thread.join(20)
    assert sorted(results) == [200] * 5 + [503]
    assert hits(sc, "render_queue") == 1


class Big(Collector):
    """Eight MB of samples: a response no kernel buffer holds."""

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily("big_test_metric", "Long labels.", labels=["n"])
        for n in range(2000):
            family.add_metric([f"{n:04000d}"], n)
        yield family


def test_a_response_not_read_in_time_is_dropped(started: Callable[..., Sidecar]) -> None:
    sc = started(request_timeout=1.0)
    sc.registry.register(Big())
    conn = socket.socket()
    conn.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    conn.settimeout(10)
    conn.connect(sc.metrics_address)
    try:
        conn.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        wait_for(lambda: sc.hits.snapshot()["request_timeout"] == 1, timeout=20)
        assert len(read_all(conn)) < 8_000_000  # what was sent before the drop, then EOF
        assert hits(sc, "request_timeout") == 1  # the renderer was never held up
    finally:
        conn.close()


def test_head_and_read_only_metrics_listener(started: Callable[..., Sidecar]) -> None:
    sc = started()
    with socket.create_connection(sc.metrics_address, timeout=5) as conn:
        conn.sendall(b"HEAD /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        head, _, rest = read_all(conn).partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK\r\n")
    assert int(head.split(b"Content-Length: ")[1].split(b"\r\n")[0]) > 1000
    assert rest == b""
    request = urllib.request.Request(sc.metrics_url + "/metrics", data=b"x", method="POST")
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(request, timeout=5)
    assert caught.value.code == 405


@pytest.mark.parametrize("where", ["metrics", "off"])
def test_api_listen_moves_or_removes_the_api(started: Callable[..., Sidecar], where: str) -> None:
    sc = started(api_listen=where)
    assert post(sc, payload("a")) == 200
    push_base = sc.push_url.removesuffix("/v1/push")
    for base in (sc.metrics_url, push_base):
        try:
            with urllib.request.urlopen(base + "/api/pools", timeout=5) as response:
                status, doc = response.status, json.loads(response.read())
        except urllib.error.HTTPError as exc:
            status, doc = exc.code, {}
        served = where == "metrics" and base == sc.metrics_url
        assert status == (200 if served else 404), base
        if served:
            assert [p["process"] for p in doc["processes"]] == ["web-1/100"]
    assert sc.api_url == (sc.metrics_url + "/api/pools" if where == "metrics" else None)
