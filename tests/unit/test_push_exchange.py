"""The app's push exchange: one deadline for all of it, a small reply, resuming after."""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from sqlalchemy_pool_exporter.instrumentation.exchange import (
    MAX_REPLY,
    ExchangeFailed,
    post,
)
from sqlalchemy_pool_exporter.instrumentation.push import Pusher
from sqlalchemy_pool_exporter.instrumentation.runtime import identity
from sqlalchemy_pool_exporter.sidecar.server import Sidecar
from sqlalchemy_pool_exporter.sidecar.settings import SidecarSettings

Answer = Callable[[socket.socket], None]


@pytest.fixture
def peer() -> Iterator[Callable[[Answer], str]]:
    """A real listening socket answering each connection with ``answer`` (in a thread)."""
    servers: list[socket.socket] = []
    stop = threading.Event()

    def start(answer: Answer) -> str:
        server = socket.create_server(("127.0.0.1", 0))
        server.settimeout(0.1)
        servers.append(server)

        def serve() -> None:
            while not stop.is_set():
                try:
                    conn, _ = server.accept()
                except (TimeoutError, OSError):
                    continue
                with conn:
                    conn.recv(65536)
                    with contextlib.suppress(OSError):  # the client gave up: fine
                        answer(conn)

        threading.Thread(target=serve, daemon=True).start()
        return f"http://127.0.0.1:{server.getsockname()[1]}/v1/push"

    yield start
    stop.set()
    for server in servers:
        server.close()


def trickle(conn: socket.socket) -> None:
    for byte in b"HTTP/1.1 200 OK\r\nContent-Length: 21\r\n\r\n":
        conn.sendall(bytes([byte]))
        time.sleep(0.3)


def flood(conn: socket.socket) -> None:
    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 500000000\r\n\r\n")
    chunk = b"x" * 65536
    for _ in range(500_000_000 // len(chunk)):
        conn.sendall(chunk)


def test_a_trickling_answer_is_abandoned_at_the_deadline(
    peer: Callable[[Answer], str],
) -> None:
    url = peer(trickle)
    begin = time.monotonic()
    with pytest.raises(ExchangeFailed) as caught:
        post(url, b"{}", {}, timeout=1.0)
    assert 1.0 <= time.monotonic() - begin < 1.5
    assert str(caught.value) == "no complete answer within 1 s; abandoned"


def test_a_huge_answer_is_read_only_up_to_the_limit(peer: Callable[[Answer], str]) -> None:
    url = peer(flood)
    begin = time.monotonic()
    reply = post(url, b"{}", {}, timeout=5.0)
    assert reply.status == 200
    assert len(reply.body) <= MAX_REPLY
    assert time.monotonic() - begin < 1.0


def test_a_stuck_push_is_counted_logged_once_and_pushing_resumes(
    peer: Callable[[Answer], str], caplog: pytest.LogCaptureFixture
) -> None:
    url = peer(trickle)
    pusher = Pusher(url=url, interval=60, timeout=0.5, token=None, identity=identity)
    caplog.set_level(logging.INFO, logger="sqlalchemy_pool_exporter.instrumentation.push")
    assert not pusher.push()
    assert not pusher.push()
    assert pusher.failed == 2
    assert [r.getMessage() for r in caplog.records] == [
        "push to sidecar failed; will retry each interval "
        f"url={url} error='no complete answer within 0.5 s; abandoned'"
    ]
    # A healthy sidecar: the next push gets through (same port: the adversarial suite).
    sidecar = Sidecar(SidecarSettings(listen="127.0.0.1:0", push_listen="127.0.0.1:0")).start()
    try:
        pusher.url = sidecar.push_url
        assert pusher.push()
        assert sidecar.aggregator.live_count() == 1
        assert caplog.records[-1].getMessage() == (
            f"push to sidecar recovered url={sidecar.push_url}"
        )
    finally:
        sidecar.stop()
