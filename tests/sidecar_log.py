"""Reading a ``serve`` subprocess's JSON log: wait for its ``listening`` line.

:func:`serve_command` starts ``serve`` on loopback port 0 with that log. ``serve`` logs
one ``listening`` event with the bound ``metrics`` and ``push`` URLs once both listeners
are up (port 0 included). :func:`watch_listening` keeps draining the process's stderr in
a thread — a full pipe would block the sidecar — and returns that event (empty if the
process ended or ``timeout`` passed first) with the lines so far.
"""

from __future__ import annotations

import json
import sys
import threading
from typing import IO, Any


def serve_command(*flags: str) -> list[str]:
    """``python -m sqlalchemy_pool_exporter serve`` on 127.0.0.1 port 0, logging JSON."""
    return [
        *(sys.executable, "-m", "sqlalchemy_pool_exporter", "serve"),
        *("--listen", "127.0.0.1:0", "--push-listen", "127.0.0.1:0", "--log-format", "json"),
        *flags,
    ]


def watch_listening(stderr: IO[str], timeout: float = 30.0) -> tuple[dict[str, Any], list[str]]:
    """The ``listening`` event from a JSON log stream, and a live list of every line."""
    found: dict[str, Any] = {}
    lines: list[str] = []
    ready = threading.Event()

    def drain() -> None:
        for line in stderr:
            lines.append(line.rstrip("\n"))
            if ready.is_set():
                continue
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if isinstance(event, dict) and event.get("event") == "listening":
                found.update(event)
                ready.set()
        ready.set()

    threading.Thread(target=drain, daemon=True).start()
    ready.wait(timeout)
    return found, lines
