"""The final push: sent once, nothing after it, and a second caller waits for it in flight.

Every exit hook (atexit, SIGTERM, uvicorn, Celery, multiprocessing) may call
``Pusher.stop`` — sometimes two at once, as when a multiprocessing worker that is
finishing on its own is SIGTERMed by ``Pool.terminate()``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from sqlalchemy_pool_exporter.instrumentation.push import Pusher
from sqlalchemy_pool_exporter.instrumentation.runtime import identity
from sqlalchemy_pool_exporter.sidecar.server import Sidecar
from sqlalchemy_pool_exporter.sidecar.settings import SidecarSettings


@pytest.fixture
def sidecar() -> Iterator[Sidecar]:
    sc = Sidecar(SidecarSettings(listen="127.0.0.1:0", push_listen="127.0.0.1:0")).start()
    yield sc
    sc.stop()


def test_final_push_retires_once_and_nothing_follows_it(sidecar: Sidecar) -> None:
    pusher = Pusher(url=sidecar.push_url, interval=60, timeout=1.0, token=None, identity=identity)
    assert pusher.push()
    assert sidecar.aggregator.live_count() == 1
    assert pusher.stop(final=True) is True
    assert sidecar.aggregator.live_count() == 0
    assert pusher.sent == 2
    assert pusher.stop(final=True) is True  # atexit after a hook: nothing sent again
    assert pusher.push() is False  # an ordinary push would make it live again
    assert pusher.sent == 2
    assert sidecar.aggregator.live_count() == 0
    assert sidecar.aggregator.expired_total == 0


def test_stop_without_final_sends_nothing(sidecar: Sidecar) -> None:
    pusher = Pusher(url=sidecar.push_url, interval=60, timeout=1.0, token=None, identity=identity)
    assert pusher.stop(final=False) is False
    assert pusher.push() is False
    assert pusher.sent == 0


def test_a_second_stop_waits_for_the_final_push_in_flight() -> None:
    arrived = threading.Event()

    class Slow(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers["Content-Length"]))
            arrived.set()
            time.sleep(0.3)
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"{}")

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Slow)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/v1/push"
        pusher = Pusher(url=url, interval=60, timeout=1.0, token=None, identity=identity)
        first: list[bool] = []
        thread = threading.Thread(target=lambda: first.append(pusher.stop(final=True)))
        thread.start()
        assert arrived.wait(5)  # the first caller's final push is at the sidecar now
        assert pusher.stop(final=True) is True  # returns once that push is accepted
        thread.join(5)
        assert first == [True]
        assert pusher.sent == 1
    finally:
        server.shutdown()
        server.server_close()
