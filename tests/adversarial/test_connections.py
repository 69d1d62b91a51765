"""Connection-level attacks: bodies held open, floods, running out of descriptors."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Callable

from tests.adversarial.attack import Target, push, record, scrape, wait_for
from tests.unit.sidecar_payloads import encode, payload

MB = 1_048_576


def _peak_rss(target: Target, stop: threading.Event, peak: list[float]) -> None:
    while not stop.is_set():
        peak[0] = max(peak[0], target.rss_mb())
        time.sleep(0.02)


def _legit_push(target: Target, within: float) -> tuple[float, int]:
    """Seconds until a legitimate push is accepted, retrying on 503; and the 503s."""
    begin, refused = time.monotonic(), 0
    while True:
        status, _ = push(target.push_url, encode(payload("legit", app="legit")), timeout=within)
        if status == 200:
            return time.monotonic() - begin, refused
        assert status == 503, status
        refused += 1
        assert time.monotonic() - begin < within


def test_body_holding_connections_stay_bounded(sidecar: Callable[..., Target]) -> None:
    target = sidecar("--request-timeout", "3")
    host, port = target.address("push")
    stop, peak = threading.Event(), [target.rss_mb()]
    watcher = threading.Thread(target=_peak_rss, args=(target, stop, peak))
    watcher.start()
    held: list[socket.socket] = []
    head = b"POST /v1/push HTTP/1.1\r\nContent-Length: %d\r\n\r\n" % MB
    body = b" " * (MB - 1)  # a valid head, a body one byte short
    try:
        for _ in range(1000):
            conn = socket.create_connection((host, port), timeout=5)
            conn.setblocking(False)
            with contextlib.suppress(OSError):  # refused at once: the bound holds
                conn.send(head + body)
            held.append(conn)
        attacked = time.monotonic()
        push_seconds, refused = _legit_push(target, within=1.0)
        status, _, scrape_seconds = scrape(target)
        assert status == 200 and scrape_seconds < 1.0

        # One byte every 0.5 s per connection: no deadline moves, every request ends.
        def open_requests() -> float | None:
            for conn in held:
                with contextlib.suppress(OSError):
                    conn.send(b" ")
            return target.value("pool_exporter_connections", listener="push") == 0

        wait_for(open_requests, timeout=3 + 3, interval=0.5)
        closed_after = time.monotonic() - attacked
    finally:
        stop.set()
        watcher.join()
        for conn in held:
            conn.close()
    hits = target.series("pool_exporter_limit_hits_total")
    assert hits[frozenset({("limit", "buffered_bytes")})] > 0
    assert peak[0] <= 250, peak[0]
    record("body-holding: peak RSS", f"{peak[0]:.0f} MB")
    record(
        "body-holding: legitimate push accepted",
        f"{push_seconds * 1000:.0f} ms ({refused} x 503 first)",
    )
    record("body-holding: scrape", f"{scrape_seconds * 1000:.0f} ms")
    record("body-holding: all requests closed after", f"{closed_after:.1f} s (timeout 3 s)")


def test_connection_flood_under_1024_descriptors(sidecar: Callable[..., Target]) -> None:
    target = sidecar(nofile=1024)
    cpu0, wall0 = target.cpu_seconds(), time.monotonic()
    flood: list[socket.socket] = []
    try:
        for n in range(2000):
            address = target.address("push" if n % 2 else "metrics")
            with contextlib.suppress(OSError):  # refused or reset: the sidecar holds its bound
                flood.append(socket.create_connection(address, timeout=5))
        threads = target.status("Threads")
        time.sleep(5)  # the flood sits there: measure what it costs meanwhile
        cpu = (target.cpu_seconds() - cpu0) / (time.monotonic() - wall0)
        status, seconds = push(target.push_url, encode(payload("legit")), timeout=5)
        assert status == 200 and seconds < 5.0
    finally:
        for conn in flood:
            conn.close()
    assert cpu < 1.0, cpu
    assert threads <= 8, threads
    assert len(target.lines) < 100, len(target.lines)
    record("flood 2,000 conns, nofile 1024: CPU", f"{cpu:.2f} core")
    record("flood: threads / log lines", f"{threads} / {len(target.lines)}")
    record("flood: legitimate push", f"{seconds * 1000:.0f} ms")


_EMFILE_SIDECAR = """
import json, os, resource, sys, threading
from sqlalchemy_pool_exporter.logs import configure_process_logging
from sqlalchemy_pool_exporter.sidecar.server import Sidecar
from sqlalchemy_pool_exporter.sidecar.settings import SidecarSettings
configure_process_logging("json")
sc = Sidecar(SidecarSettings(
    listen="127.0.0.1:0", push_listen="127.0.0.1:0", max_connections=4000)).start()
# Fewer descriptors than the caps allow: accept() will fail with EMFILE.
used = len(os.listdir("/proc/self/fd"))
hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
resource.setrlimit(resource.RLIMIT_NOFILE, (used + 30, hard))
print(json.dumps({"event": "listening", "metrics": sc.metrics_url, "push": sc.push_url}),
      file=sys.stderr, flush=True)
threading.Event().wait()
"""


def test_out_of_descriptors_backs_off_quietly(sidecar: Callable[..., Target]) -> None:
    target = sidecar(script=_EMFILE_SIDECAR)
    cpu0, wall0 = target.cpu_seconds(), time.monotonic()
    flood: list[socket.socket] = []
    try:
        for _ in range(300):
            with contextlib.suppress(OSError):
                flood.append(socket.create_connection(target.address("push"), timeout=5))
        wait_for(lambda: target.events("limit reached"), timeout=10)
        time.sleep(3)  # the listening socket stays readable all along: no spinning
        cpu = (target.cpu_seconds() - cpu0) / (time.monotonic() - wall0)
        # Idle flood connections are closed to free descriptors: a pusher gets in within
        # one push interval, behind the flood's connections queued before it.
        status, seconds = push(target.push_url, encode(payload("a")), timeout=5)
        assert status == 200
    finally:
        for conn in flood:
            conn.close()
    (line,) = target.events("limit reached")
    assert (line["limit"], line["error"]) == ("file_descriptors", "Too many open files")
    assert cpu < 0.3, cpu
    hits = target.value("pool_exporter_limit_hits_total", limit="file_descriptors")
    assert hits is not None and hits > 0
    record("EMFILE: CPU while out of descriptors", f"{cpu:.2f} core, 1 log line")
    record("EMFILE: legitimate push behind 300 queued connections", f"{seconds:.1f} s")
