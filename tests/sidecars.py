"""Real sidecars for tests: in-process, or as a ``serve`` subprocess.

The fixtures (in ``tests/conftest.py``, so every test directory has them):

* ``sidecar`` — a fresh in-process :class:`~sqlalchemy_pool_exporter.sidecar.server.Sidecar`
  on 127.0.0.1 port 0 (both listeners), stopped after the test. Cheapest; state is
  inspectable directly.
* ``sidecar_factory(**settings)`` — more in-process sidecars with setting overrides
  (e.g. ``token="s3cret"``, ``per_process=True``, ``expiry_factor=2``).
* ``sidecar_process`` — ONE real ``python -m sqlalchemy_pool_exporter serve`` subprocess for
  the whole session (port 0; addresses read from its ``listening`` log line). Share it where a
  test only adds pushes and reads; use a fresh app name per test to stay independent.
* ``sidecar_process_factory(*flags, env=...)`` — fresh subprocesses, terminated after.
* :func:`start_sidecar_process` / :func:`start_sidecar` — the same without pytest, for
  session fixtures of your own.

Every one of them is a :class:`RunningSidecar` (``server`` is the in-process one):
``metrics_url`` (``http://127.0.0.1:P``), ``push_url`` (``http://127.0.0.1:Q/v1/push``),
``metrics_port``/``push_port``, and small readers: ``metrics_text()``,
``value(name, **labels)``, ``series(name)``, ``api()``, ``wait_until(predicate)``.

State that survives a restart: pass ``state_dir=...`` to the in-process ones, or the
flag ``--state-dir DIR`` to the subprocess ones. To restart a subprocess on the same
ports (as Prometheus expects), give fixed ``--listen``/``--push-listen`` flags, end it
with ``kill()`` (SIGKILL, as the OOM killer does) or ``stop()`` (SIGTERM), and start it
again with the same flags.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from prometheus_client.parser import text_string_to_metric_families

from sqlalchemy_pool_exporter.sidecar.server import Sidecar
from sqlalchemy_pool_exporter.sidecar.settings import SidecarSettings
from tests.sidecar_log import serve_command, watch_listening

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class RunningSidecar:
    """A started sidecar and how to reach it."""

    metrics_url: str
    push_url: str
    sidecar: Sidecar | None = None
    process: subprocess.Popen[str] | None = None
    log_lines: list[str] = field(default_factory=list)

    @property
    def server(self) -> Sidecar:
        """The in-process :class:`Sidecar` itself (a ``serve`` subprocess has none)."""
        assert self.sidecar is not None, "a serve subprocess has no in-process Sidecar"
        return self.sidecar

    @property
    def metrics_port(self) -> int:
        """Port of /metrics and /healthz."""
        return int(urlsplit(self.metrics_url).port or 0)

    @property
    def push_port(self) -> int:
        """Port of POST /v1/push (and, by default, /api/pools)."""
        return int(urlsplit(self.push_url).port or 0)

    def get(self, path: str, headers: dict[str, str] | None = None) -> bytes:
        """GET ``path`` from the metrics listener."""
        request = urllib.request.Request(self.metrics_url + path, headers=headers or {})
        with urllib.request.urlopen(request, timeout=10) as response:
            body: bytes = response.read()
        return body

    def metrics_text(self) -> str:
        """Current /metrics in the Prometheus text format."""
        return self.get("/metrics").decode()

    def api(self) -> dict[str, Any]:
        """Current /api/pools document (served on the push listener by default)."""
        url = self.push_url.removesuffix("/v1/push") + "/api/pools"
        with urllib.request.urlopen(url, timeout=10) as response:
            doc: dict[str, Any] = json.loads(response.read())
        return doc

    def series(self, name: str) -> dict[frozenset[tuple[str, str]], float]:
        """Every sample called ``name`` (full sample name, e.g. ``..._total``) by labels."""
        out: dict[frozenset[tuple[str, str]], float] = {}
        for family in text_string_to_metric_families(self.metrics_text()):
            for sample in family.samples:
                if sample.name == name:
                    out[frozenset(sample.labels.items())] = sample.value
        return out

    def value(self, name: str, **labels: str) -> float | None:
        """The sample ``name`` with exactly ``labels``, or None if absent."""
        return self.series(name).get(frozenset(labels.items()))

    def wait_until(
        self, predicate: Callable[[], Any], timeout: float = 15.0, interval: float = 0.1
    ) -> Any:
        """Poll ``predicate`` until truthy (returned) or fail after ``timeout`` s."""
        deadline = time.monotonic() + timeout
        while True:
            result = predicate()
            if result:
                return result
            if time.monotonic() > deadline:
                pytest.fail(f"condition not met within {timeout} s")
            time.sleep(interval)

    def kill(self) -> None:
        """SIGKILL the subprocess: no clean shutdown, no last save."""
        assert self.process is not None, "only a subprocess can be killed"
        self.process.kill()
        self.process.wait(10)

    def stop(self) -> None:
        """Stop the sidecar (in-process or subprocess)."""
        if self.sidecar is not None:
            self.sidecar.stop()
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)


def start_sidecar(**settings: Any) -> RunningSidecar:
    """An in-process sidecar on 127.0.0.1 port 0 with ``settings`` overrides."""
    values = {"listen": "127.0.0.1:0", "push_listen": "127.0.0.1:0", **settings}
    sidecar = Sidecar(SidecarSettings(**values)).start()
    return RunningSidecar(sidecar.metrics_url, sidecar.push_url, sidecar=sidecar)


def start_sidecar_process(
    *flags: str, env: dict[str, str] | None = None, timeout: float = 20.0
) -> RunningSidecar:
    """A ``python -m sqlalchemy_pool_exporter serve`` subprocess on port 0.

    Waits for its ``listening`` line, which gives the bound addresses.
    """
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("POOL_EXPORTER_")}
    full_env.update(env or {})
    full_env["PYTHONPATH"] = str(ROOT) + os.pathsep + full_env.get("PYTHONPATH", "")
    process = subprocess.Popen(
        serve_command(*flags),
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
        env=full_env,
        cwd=ROOT,
    )
    assert process.stderr is not None
    found, lines = watch_listening(process.stderr, timeout)
    if not found:
        process.kill()
        process.wait(5)
        raise RuntimeError("sidecar did not start: " + " | ".join(lines[-5:]))
    return RunningSidecar(found["metrics"], found["push"], process=process, log_lines=lines)
