"""Running :mod:`tests.adversarial.instrumented_app`, and peers that misbehave for it."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

from tests.adversarial.attack import ROOT

Answer = Callable[[socket.socket], None]


@contextmanager
def instrumented_app(push_url: str, **settings: str) -> Iterator[subprocess.Popen[str]]:
    """The app pushing to ``push_url``; yields once it printed ``ready``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("POOL_EXPORTER_")}
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env["POOL_EXPORTER_PUSH_URL"] = push_url
    env.update({f"POOL_EXPORTER_{k.upper()}": v for k, v in settings.items()})
    process = subprocess.Popen(
        [sys.executable, str(Path(__file__).with_name("instrumented_app.py"))],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=ROOT,
    )
    try:
        assert process.stdout is not None
        assert process.stdout.readline().strip() == "ready"
        yield process
    finally:
        process.kill()
        process.wait(10)


def app_rss_mb(process: subprocess.Popen[str]) -> float:
    """Resident memory of the app, MB."""
    for line in Path(f"/proc/{process.pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise KeyError("VmRSS")


@contextmanager
def misbehaving_peer(answer: Answer, port: int = 0) -> Iterator[tuple[int, list[int]]]:
    """A listening socket answering each connection with ``answer``: (port, served)."""
    server = socket.create_server(("127.0.0.1", port))
    server.settimeout(0.1)
    stop, served = threading.Event(), [0]

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except (TimeoutError, OSError):
                continue
            served[0] += 1
            threading.Thread(target=_answer, args=(conn, answer), daemon=True).start()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield server.getsockname()[1], served
    finally:
        stop.set()
        thread.join(5)
        server.close()


def _answer(conn: socket.socket, answer: Answer) -> None:
    with conn, suppress(OSError):  # the client gave up: that is the point
        conn.recv(1 << 20)
        answer(conn)


def trickle(conn: socket.socket) -> None:
    """An answer one byte every 1.5 s."""
    for byte in b"HTTP/1.1 200 OK\r\nContent-Length: 21\r\n\r\n":
        conn.sendall(bytes([byte]))
        time.sleep(1.5)


def flood(conn: socket.socket) -> None:
    """A 500 MB answer, as fast as the client takes it."""
    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 500000000\r\n\r\n")
    chunk = bytes(1 << 20)
    for _ in range(500):
        conn.sendall(chunk)
