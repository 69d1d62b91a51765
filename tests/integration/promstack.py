"""Real Prometheus and Alertmanager for integration tests, on free 127.0.0.1 ports.

Integration tests that need to prove something *in Prometheus* (alert rules firing,
dashboard queries returning data, a scrape of the sidecar succeeding) start the real
Debian binaries — ``prometheus`` and ``prometheus-alertmanager`` (also found as
``alertmanager``) — with this module instead of faking their behaviour.

Each server runs in its own temporary directory holding its config file, its data
directory and its log (stdout+stderr). Ports are picked free on 127.0.0.1 and, if the
port is taken between picking and binding, the start is retried with another one.
:meth:`start` returns only once the server answers ``/-/ready``; a server that dies or
never becomes ready raises :class:`StackError` with the tail of its log.

Typical use (binaries found through ``tests.conftest.require_binary``, which fails in CI
when one is missing)::

    from tests.integration import promstack

    config = promstack.prometheus_config(
        scrape_targets={"sidecar": [f"127.0.0.1:{port}"]},
        rule_files=[Path("prometheus/alerts.yaml")],
        alertmanager_url=am.address,          # optional
        interval="1s",
    )
    with promstack.Prometheus(config, workdir=tmp_path / "prom") as prom:
        prom.wait_for_targets_up("sidecar", timeout=30)
        prom.wait_for(lambda: prom.query("up") or None, timeout=20, what="a scrape")
        alerts = prom.alerts()

    with promstack.Alertmanager(am_config_yaml, workdir=tmp_path / "am") as am:
        am.alerts()                            # /api/v2/alerts

Rule files are referenced by absolute path, so a test can point at the *shipped* rules
file. ``--web.enable-lifecycle`` is on, so :meth:`Prometheus.reload` re-reads the config.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

import yaml

T = TypeVar("T")
S = TypeVar("S", bound="_Server")

HOST = "127.0.0.1"


class StackError(RuntimeError):
    """A server failed to start, died, or a wait timed out."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def wait_for(
    probe: Callable[[], T | None],
    timeout: float,
    what: str,
    interval: float = 0.25,
) -> T:
    """Call ``probe`` until it returns something other than None/False; its last value.

    Exceptions raised by ``probe`` count as "not yet" (a server still starting refuses
    connections); the last one is reported if the wait times out.
    """
    deadline = time.monotonic() + timeout
    last_error: BaseException | None = None
    while True:
        try:
            value = probe()
            if value is not None and value is not False:
                return value
        except (OSError, ValueError, KeyError, StackError) as exc:
            last_error = exc
        if time.monotonic() >= deadline:
            detail = f" (last error: {last_error!r})" if last_error else ""
            raise StackError(f"timed out after {timeout:g}s waiting for {what}{detail}")
        time.sleep(interval)


def http_get_json(url: str, timeout: float = 5.0) -> Any:
    """GET ``url`` and decode its JSON body."""
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return json.loads(response.read().decode())


def find_binary(*names: str) -> str | None:
    """The first of ``names`` found on PATH."""
    for name in names:
        path = shutil.which(name)
        if path:
            return path
    return None


def prometheus_config(
    scrape_targets: Mapping[str, Sequence[str]],
    rule_files: Sequence[Path | str] = (),
    alertmanager_url: str | None = None,
    interval: str = "1s",
    metrics_path: str = "/metrics",
) -> dict[str, Any]:
    """A prometheus.yml as a dict: one static job per ``scrape_targets`` entry.

    ``scrape_targets`` maps a job name to ``host:port`` targets. ``interval`` is used for
    both scraping and rule evaluation; tests shorten it to keep runs short.
    """
    config: dict[str, Any] = {
        "global": {
            "scrape_interval": interval,
            "scrape_timeout": interval,
            "evaluation_interval": interval,
        },
        "rule_files": [str(Path(p).resolve()) for p in rule_files],
        "scrape_configs": [
            {
                "job_name": job,
                "metrics_path": metrics_path,
                "static_configs": [{"targets": list(targets)}],
            }
            for job, targets in scrape_targets.items()
        ],
    }
    if alertmanager_url is not None:
        hostport = urllib.parse.urlsplit(alertmanager_url).netloc
        config["alerting"] = {"alertmanagers": [{"static_configs": [{"targets": [hostport]}]}]}
    return config


class _Server:
    """A binary serving HTTP on 127.0.0.1:<free port> from a private work directory."""

    #: binary names to look for, in order
    binaries: tuple[str, ...] = ()
    config_name = "config.yml"
    start_timeout = 30.0

    def __init__(
        self,
        config: Mapping[str, Any] | str,
        workdir: Path | str | None = None,
        binary: str | None = None,
        extra_args: Sequence[str] = (),
    ) -> None:
        self.config_text = config if isinstance(config, str) else yaml.safe_dump(dict(config))
        self._own_workdir = workdir is None
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix=f"{type(self).__name__.lower()}-"))
        self.binary = binary or find_binary(*self.binaries)
        self.extra_args = list(extra_args)
        self.port = 0
        self.process: subprocess.Popen[bytes] | None = None
        self._log_handle: Any = None

    # -- paths and addresses -------------------------------------------------------------
    @property
    def config_path(self) -> Path:
        return self.workdir / self.config_name

    @property
    def data_path(self) -> Path:
        return self.workdir / "data"

    @property
    def log_path(self) -> Path:
        return self.workdir / "server.log"

    @property
    def address(self) -> str:
        """Base URL, e.g. ``http://127.0.0.1:41234``."""
        return f"http://{HOST}:{self.port}"

    def args(self) -> list[str]:
        """Command line for the current port (subclasses)."""
        raise NotImplementedError

    # -- lifecycle -----------------------------------------------------------------------
    def start(self) -> None:
        """Start the server and wait until ``/-/ready`` answers 200."""
        if self.binary is None:
            raise StackError(f"none of {self.binaries} found on PATH")
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.data_path.mkdir(exist_ok=True)
        self.config_path.write_text(self.config_text)
        for attempt in range(3):
            self.port = free_port()
            self._log_handle = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
            self.process = subprocess.Popen(
                [self.binary, *self.args(), *self.extra_args],
                stdout=self._log_handle,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=self.workdir,
                start_new_session=True,
            )
            try:
                self._wait_ready()
                return
            except StackError:
                log = self.log_tail()
                self.stop()
                if "address already in use" in log and attempt < 2:
                    continue  # someone took the port between picking and binding
                raise StackError(f"{self.binary} did not become ready:\n{log}") from None

    def _wait_ready(self) -> None:
        def ready() -> bool:
            if self.process is None or self.process.poll() is not None:
                raise StackError(f"exited with {self.process and self.process.returncode}")
            with urllib.request.urlopen(f"{self.address}/-/ready", timeout=2) as resp:
                return bool(resp.status == 200)

        deadline = time.monotonic() + self.start_timeout
        while True:
            try:
                if ready():
                    return
            except StackError:
                raise
            except OSError:
                pass
            if time.monotonic() >= deadline:
                raise StackError("not ready in time")
            time.sleep(0.2)

    def stop(self, timeout: float = 10.0) -> None:
        """Terminate the server (SIGTERM, then SIGKILL) and close its log."""
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout)
        if self._log_handle is not None:
            self._log_handle.close()
            self._log_handle = None

    def cleanup(self) -> None:
        """Stop, and remove the work directory if this object created it."""
        self.stop()
        if self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self: S) -> S:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.cleanup()

    def log_tail(self, lines: int = 40) -> str:
        """The last lines of the server's log (for failure messages)."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    # -- HTTP ----------------------------------------------------------------------------
    def get(self, path: str, params: Mapping[str, str] | None = None) -> Any:
        """GET ``path`` (with query ``params``) and decode the JSON answer."""
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        return http_get_json(f"{self.address}{path}{query}")

    def post(self, path: str) -> int:
        """POST an empty body to ``path``; the HTTP status."""
        request = urllib.request.Request(f"{self.address}{path}", data=b"", method="POST")
        with urllib.request.urlopen(request, timeout=10) as response:
            return int(response.status)

    def wait_for(self, probe: Callable[[], T | None], timeout: float, what: str) -> T:
        """:func:`wait_for`, adding this server's log tail to a timeout error."""
        try:
            return wait_for(probe, timeout, what)
        except StackError as exc:
            name = type(self).__name__
            raise StackError(f"{exc}\n--- {name} log ---\n{self.log_tail()}") from None


class Prometheus(_Server):
    """A real ``prometheus`` server. ``config`` is a prometheus.yml dict or text."""

    binaries = ("prometheus",)
    config_name = "prometheus.yml"

    def args(self) -> list[str]:
        return [
            f"--config.file={self.config_path}",
            f"--storage.tsdb.path={self.data_path}",
            f"--web.listen-address={HOST}:{self.port}",
            "--web.enable-lifecycle",
            "--storage.tsdb.retention.time=1d",
        ]

    def _data(self, path: str, params: Mapping[str, str] | None = None) -> Any:
        body = self.get(path, params)
        if body.get("status") != "success":
            raise StackError(f"{path} failed: {body}")
        return body["data"]

    def query(self, expr: str, at: float | None = None) -> list[dict[str, Any]]:
        """Instant query; the result vector: ``[{"metric": {...}, "value": [t, "v"]}, ...]``."""
        params = {"query": expr}
        if at is not None:
            params["time"] = f"{at:.3f}"
        data = self._data("/api/v1/query", params)
        result: list[dict[str, Any]] = data["result"]
        return result

    def query_range(self, expr: str, start: float, end: float, step: str) -> list[dict[str, Any]]:
        """Range query; the result matrix."""
        data = self._data(
            "/api/v1/query_range",
            {"query": expr, "start": f"{start:.3f}", "end": f"{end:.3f}", "step": step},
        )
        result: list[dict[str, Any]] = data["result"]
        return result

    def alerts(self) -> list[dict[str, Any]]:
        """Active (pending and firing) alerts: ``/api/v1/alerts``."""
        alerts: list[dict[str, Any]] = self._data("/api/v1/alerts")["alerts"]
        return alerts

    def rule_groups(self) -> list[dict[str, Any]]:
        """Loaded rule groups with their health: ``/api/v1/rules``."""
        groups: list[dict[str, Any]] = self._data("/api/v1/rules")["groups"]
        return groups

    def targets(self) -> list[dict[str, Any]]:
        """Active scrape targets: ``/api/v1/targets``."""
        targets: list[dict[str, Any]] = self._data("/api/v1/targets")["activeTargets"]
        return targets

    def wait_for_targets_up(self, job: str, timeout: float = 30.0) -> list[dict[str, Any]]:
        """Wait until every target of ``job`` has been scraped successfully."""

        def all_up() -> list[dict[str, Any]] | None:
            mine = [t for t in self.targets() if t["labels"].get("job") == job]
            return mine if mine and all(t["health"] == "up" for t in mine) else None

        return self.wait_for(all_up, timeout, f"targets of job {job!r} to be up")

    def reload(self) -> None:
        """Re-read the config file (after editing ``config_path``)."""
        self.post("/-/reload")


class Alertmanager(_Server):
    """A real Alertmanager (``prometheus-alertmanager`` on Debian) with clustering off."""

    binaries = ("prometheus-alertmanager", "alertmanager")
    config_name = "alertmanager.yml"

    def args(self) -> list[str]:
        return [
            f"--config.file={self.config_path}",
            f"--storage.path={self.data_path}",
            f"--web.listen-address={HOST}:{self.port}",
            "--cluster.listen-address=",  # no gossip port: a single local instance
        ]

    def alerts(self) -> list[dict[str, Any]]:
        """Alerts Alertmanager holds: ``/api/v2/alerts``."""
        alerts: list[dict[str, Any]] = self.get("/api/v2/alerts")
        return alerts
