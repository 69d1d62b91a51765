"""The final push at exit reports every pool, whichever SQLAlchemy (2.0 creates no finalizer)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from tests.integration.conftest import ROOT


class Receiver(ThreadingHTTPServer):
    """Keeps every push body posted to it."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.pushes: list[dict[str, Any]] = []


class _Handler(BaseHTTPRequestHandler):
    server: Receiver

    def do_POST(self) -> None:
        self.server.pushes.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()
    server.server_close()


def test_final_push_carries_the_pools(receiver: Receiver) -> None:
    code = (
        "from sqlalchemy import create_engine\n"
        "import sqlalchemy_pool_exporter\n"
        "engine = create_engine('sqlite://')\n"
        "sqlalchemy_pool_exporter.instrument(engine, name='main')\n"
        "for _ in range(3):\n"
        "    engine.connect().close()\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("POOL_EXPORTER_")}
    env.update(
        PYTHONPATH=str(ROOT),
        POOL_EXPORTER_PUSH_URL=f"http://127.0.0.1:{receiver.server_address[1]}/v1/push",
        POOL_EXPORTER_PUSH_INTERVAL="60",
    )
    done = subprocess.run([sys.executable, "-c", code], env=env, cwd=ROOT, timeout=60)
    assert done.returncode == 0
    final = [p for p in receiver.pushes if p["final"]]
    assert len(final) == 1
    assert {name: pool["counters"]["checkouts"] for name, pool in final[0]["pools"].items()} == {
        "main": 3
    }
