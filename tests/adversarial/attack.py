"""Tools of the adversarial suite: a real ``serve`` subprocess, measured from ``/proc``.

:func:`start` runs ``sqlalchemy-pool-exporter serve`` on loopback port 0 (optionally
under a lower ``RLIMIT_NOFILE``) and returns a :class:`Target`: its URLs, its JSON log
lines as they arrive, and readers of what the kernel says about it — resident memory,
CPU seconds, threads. :func:`push` and :func:`scrape` are the legitimate client, timed.
:data:`FIGURES` collects the measured numbers; the suite's conftest prints them.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import resource
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from prometheus_client.parser import text_string_to_metric_families

from tests.sidecar_log import watch_listening

ROOT = Path(__file__).resolve().parents[2]
FIGURES: dict[str, str] = {}


def record(name: str, value: str) -> None:
    """Keep one measured figure for the summary."""
    FIGURES[name] = value


def raise_own_fd_limit() -> None:
    """Let this (client) process open thousands of sockets."""
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


@dataclass
class Target:
    """A running sidecar subprocess."""

    process: subprocess.Popen[str]
    metrics_url: str
    push_url: str
    lines: list[str] = field(default_factory=list)

    def address(self, which: str) -> tuple[str, int]:
        """(host, port) of the ``push`` or ``metrics`` listener."""
        parts = urlsplit(self.push_url if which == "push" else self.metrics_url)
        return str(parts.hostname), int(parts.port or 0)

    def status(self, key: str) -> int:
        """A ``/proc/<pid>/status`` number (``VmRSS`` in kB, ``Threads``)."""
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
        raise KeyError(key)

    def rss_mb(self) -> float:
        """Resident memory, MB."""
        return self.status("VmRSS") / 1024

    def cpu_seconds(self) -> float:
        """User plus system CPU time so far."""
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def events(self, name: str) -> list[dict[str, Any]]:
        """Log events called ``name`` so far."""
        found = []
        for line in list(self.lines):
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if event.get("event") == name:
                found.append(event)
        return found

    def series(self, name: str) -> dict[frozenset[tuple[str, str]], float]:
        """Samples called ``name`` in a scrape, by labels."""
        _, body, _ = scrape(self)
        return {
            frozenset(s.labels.items()): s.value
            for f in text_string_to_metric_families(body.decode())
            for s in f.samples
            if s.name == name
        }

    def value(self, name: str, **labels: str) -> float | None:
        """One sample of a scrape, or None."""
        return self.series(name).get(frozenset(labels.items()))

    def plain(self, name: str) -> float:
        """An unlabelled sample, found in the text without parsing all of it."""
        found = re.search(rb"^%s (\S+)$" % name.encode(), scrape(self)[1], re.MULTILINE)
        assert found is not None, name
        return float(found.group(1))

    def stop(self) -> None:
        """Terminate it (kill if it does not stop)."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)


def start(*flags: str, nofile: int | None = None, script: str | None = None) -> Target:
    """``serve`` (or ``python -c script``) on loopback port 0; waits for ``listening``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("POOL_EXPORTER_")}
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    base = ["serve", "--listen", "127.0.0.1:0", "--push-listen", "127.0.0.1:0"]
    args = ["-c", script] if script else ["-m", "sqlalchemy_pool_exporter", *base]
    limit: Callable[[], None] | None = None
    if nofile is not None:

        def limit() -> None:
            resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))

    process = subprocess.Popen(
        [sys.executable, *args, "--log-format", "json", *flags],
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
        env=env,
        cwd=ROOT,
        preexec_fn=limit,
    )
    assert process.stderr is not None
    found, lines = watch_listening(process.stderr, 30)
    if not found:
        process.kill()
        raise RuntimeError("sidecar did not start: " + " | ".join(lines[-5:]))
    return Target(process, found["metrics"], found["push"], lines)


def push(url: str, body: bytes, timeout: float = 5.0) -> tuple[int, float]:
    """POST one push; (status, seconds). Status 0: the connection failed."""
    begin = time.monotonic()
    request = urllib.request.Request(url, data=body, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            status = int(response.status)
    except urllib.error.HTTPError as exc:
        status = exc.code
    except OSError:
        status = 0
    return status, time.monotonic() - begin


def scrape(target: Target, path: str = "/metrics") -> tuple[int, bytes, float]:
    """GET from the metrics listener; (status, body, seconds)."""
    host, port = target.address("metrics")
    begin = time.monotonic()
    conn = http.client.HTTPConnection(host, port, timeout=30)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        body = response.read()
        return response.status, body, time.monotonic() - begin
    finally:
        conn.close()


def wait_for(predicate: Callable[[], Any], timeout: float, interval: float = 0.05) -> Any:
    """Poll ``predicate`` until truthy (returned); AssertionError after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while not (result := predicate()):
        assert time.monotonic() < deadline, f"condition not met within {timeout} s"
        time.sleep(interval)
    return result
