"""End to end: a leaking app exhausts its pool, and Alertmanager tells a webhook, then resolves.

Everything is real and on 127.0.0.1:

* two instrumented app processes (this file run as a script, see :func:`workload_main`)
  of app ``shop`` with pool ``shop-db`` (QueuePool, pool_size 2, max_overflow 0,
  pool_timeout 0.5 s) push to a real sidecar (``sqlalchemy-pool-exporter serve``) through
  ``POOL_EXPORTER_PUSH_URL``. One leaks: it checks out both connections and keeps them,
  while three request threads time out again and again. The other is healthy, but
  forks a worker at start that inherits its pooled connection (no
  ``dispose(close=False)`` in the child). The sidecar folds all three processes into
  one ``app="shop", pool="shop-db"`` series set;
* Prometheus scrapes the sidecar every second as job ``sqlalchemy-pool-exporter`` and
  evaluates the SHIPPED ``prometheus/recording.yaml`` and ``prometheus/alerts.yaml``
  (unchanged durations: 1m for both alerts here) every second;
* Alertmanager (group_wait/group_interval 1 s) sends to a webhook served by this test.

The test waits for the firing ``SQLAlchemyPoolCheckoutTimeouts``,
``SQLAlchemyPoolExhausted`` and ``SQLAlchemyPoolForkInheritedConnections``
notifications, checks their exact labels and annotations, stops the leak, and waits for
the first two to resolve (the fork alert looks back 15 minutes). Exhausted resolves within
seconds; CheckoutTimeouts once the last timeout leaves its 1m rate window. About two
and a half minutes in all.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import require_binary
from tests.integration import promstack
from tests.integration.conftest import RunningSidecar

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
APP = "shop"
POOL = "shop-db"
JOB = "sqlalchemy-pool-exporter"
RUNBOOK = (
    "https://github.com/sqlalchemy-pool-exporter/sqlalchemy-pool-exporter/blob/main/docs/runbook.md"
)
EXPECTED = ("SQLAlchemyPoolCheckoutTimeouts", "SQLAlchemyPoolExhausted")
FORK = "SQLAlchemyPoolForkInheritedConnections"
FIRE_TIMEOUT = 120.0  # `for: 1m` plus push, scrape and notification delays
RESOLVE_TIMEOUT = 110.0  # the 1m rate window of the timeouts plus the same delays


# -- the app: run as a script in a subprocess ---------------------------------------------


def workload_main(db_path: str, control: str, role: str) -> None:
    """An instrumented app process; ``role`` is ``leak`` or ``healthy``.

    Configured like any app through ``POOL_EXPORTER_*`` (push URL, interval, app).
    ``<control>.release`` appearing ends the leak (and the extra request threads);
    ``<control>.exit`` makes the process exit normally (final push retires it).
    """
    from sqlalchemy import create_engine, text
    from sqlalchemy.exc import TimeoutError as PoolTimeout
    from sqlalchemy.pool import QueuePool

    import sqlalchemy_pool_exporter

    engine = create_engine(
        f"sqlite:///{db_path}",
        poolclass=QueuePool,
        pool_size=2,
        max_overflow=0,
        pool_timeout=0.5,
        connect_args={"check_same_thread": False},
    )
    sqlalchemy_pool_exporter.instrument(engine, name=POOL)
    if role == "healthy":
        with engine.connect() as conn:  # one idle pooled connection ...
            conn.execute(text("SELECT 1"))
        if os.fork() == 0:  # ... that a forked worker inherits and uses
            with engine.connect() as conn:
                conn.execute(text("SELECT 1"))
            while not os.path.exists(control + ".exit"):
                time.sleep(0.1)
            return  # a normal exit: the final push retires it
        engine.dispose()  # the parent stops sharing that connection with its child
    leaked = [engine.connect() for _ in range(2)] if role == "leak" else []
    released = threading.Event()

    def request(index: int) -> None:
        # After the release one thread keeps a light load, so utilization stays below 1.
        while not (released.is_set() and index > 0):
            try:
                with engine.connect() as conn:
                    conn.execute(text("SELECT 1"))
            except PoolTimeout:
                continue  # the error users would see; counted by the exporter
            time.sleep(0.05)

    threads = [threading.Thread(target=request, args=(i,), daemon=True) for i in range(3)]
    for thread in threads:
        thread.start()
    while not os.path.exists(control + ".release"):
        time.sleep(0.1)
    for conn in leaked:
        conn.close()
    released.set()
    while not os.path.exists(control + ".exit"):
        time.sleep(0.1)
    if role == "healthy":
        os.wait()  # the forked worker


# -- the webhook receiver ------------------------------------------------------------------


class Webhook(ThreadingHTTPServer):
    """Collects every Alertmanager notification (JSON body) POSTed to it."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _WebhookHandler)
        self.notifications: list[dict[str, Any]] = []
        self.lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/alerts"

    def alerts(self) -> list[dict[str, Any]]:
        """Every alert of every notification, in arrival order."""
        with self.lock:
            return [a for n in self.notifications for a in n["alerts"]]

    def find(self, alertname: str, status: str) -> dict[str, Any] | None:
        for alert in self.alerts():
            if alert["labels"].get("alertname") == alertname and alert["status"] == status:
                return alert
        return None


class _WebhookHandler(BaseHTTPRequestHandler):
    server: Webhook

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", "0"))
        body = json.loads(self.rfile.read(length))
        with self.server.lock:
            self.server.notifications.append(body)
        self.send_response(200)
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass  # keep the test output clean


@pytest.fixture
def webhook() -> Iterator[Webhook]:
    server = Webhook()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def alertmanager_config(webhook_url: str) -> dict[str, Any]:
    return {
        "global": {"resolve_timeout": "5s"},
        "route": {
            "receiver": "webhook",
            "group_by": ["alertname", "app", "pool"],
            "group_wait": "1s",
            "group_interval": "1s",
            "repeat_interval": "1h",
        },
        "receivers": [
            {"name": "webhook", "webhook_configs": [{"url": webhook_url, "send_resolved": True}]},
        ],
    }


def start_app(role: str, sidecar: RunningSidecar, tmp_path: Path) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("POOL_EXPORTER_")}
    env.update(
        {
            "POOL_EXPORTER_PUSH_URL": sidecar.push_url,
            "POOL_EXPORTER_PUSH_INTERVAL": "1",
            "POOL_EXPORTER_APP": APP,
            "PYTHONPATH": str(ROOT) + os.pathsep + env.get("PYTHONPATH", ""),
        }
    )
    with open(tmp_path / f"app-{role}.log", "wb") as log:  # the child keeps its own copy
        return subprocess.Popen(
            [
                sys.executable,
                __file__,
                str(tmp_path / f"{role}.db"),
                str(tmp_path / "control"),
                role,
            ],
            env=env,
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )


def expected_labels(alertname: str, severity: str) -> dict[str, str]:
    # The recording rules aggregate by (namespace, job, app, pool); there is no namespace
    # in this static scrape config, and instance is folded away.
    return {"alertname": alertname, "severity": severity, "job": JOB, "app": APP, "pool": POOL}


def test_leak_fires_exhausted_and_timeouts_then_resolves(
    tmp_path: Path, webhook: Webhook, sidecar_process_factory: Callable[..., RunningSidecar]
) -> None:
    require_binary("prometheus")
    require_binary("prometheus-alertmanager")
    sidecar = sidecar_process_factory()  # a real `sqlalchemy-pool-exporter serve`
    started = time.monotonic()
    apps: list[subprocess.Popen[bytes]] = []
    rule_files = [ROOT / "prometheus" / "recording.yaml", ROOT / "prometheus" / "alerts.yaml"]
    with promstack.Alertmanager(alertmanager_config(webhook.url), workdir=tmp_path / "am") as am:
        config = promstack.prometheus_config(
            scrape_targets={JOB: [f"127.0.0.1:{sidecar.metrics_port}"]},
            rule_files=rule_files,
            alertmanager_url=am.address,
            interval="1s",
        )
        with promstack.Prometheus(
            config, workdir=tmp_path / "prom", extra_args=["--rules.alert.resend-delay=2s"]
        ) as prom:
            try:
                apps = [start_app(role, sidecar, tmp_path) for role in ("leak", "healthy")]
                prom.wait_for_targets_up(JOB, timeout=30)
                # The shipped files are the ones evaluated.
                loaded = {g["file"] for g in prom.rule_groups()}
                assert loaded == {str(p) for p in rule_files}

                both = prom.wait_for(
                    lambda: prom.query(f'sqlalchemy_pool_processes{{app="{APP}"}} == 3'),
                    30,
                    "both app processes and the forked worker at the sidecar",
                )
                assert both[0]["metric"]["pool"] == POOL

                fired = prom.wait_for(
                    lambda: all(webhook.find(n, "firing") for n in (*EXPECTED, FORK)) or None,
                    FIRE_TIMEOUT,
                    "firing notifications of " + ", ".join((*EXPECTED, FORK)),
                )
                assert fired
                fired_after = time.monotonic() - started

                timeouts = webhook.find("SQLAlchemyPoolCheckoutTimeouts", "firing")
                exhausted = webhook.find("SQLAlchemyPoolExhausted", "firing")
                assert timeouts is not None and exhausted is not None
                assert timeouts["labels"] == expected_labels(
                    "SQLAlchemyPoolCheckoutTimeouts", "critical"
                )
                assert exhausted["labels"] == expected_labels("SQLAlchemyPoolExhausted", "critical")
                assert exhausted["annotations"] == {
                    "summary": "SQLAlchemy pool has no free connection and callers are waiting.",
                    "description": (
                        "Every connection of SQLAlchemy pool shop-db of app shop is checked out"
                        " (utilization 100%) and callers have been waiting for one or timing"
                        " out for 1m. Requests that need the database stall for up to"
                        " pool_timeout, then fail."
                    ),
                    "runbook_url": f"{RUNBOOK}#sqlalchemypoolexhausted",
                }
                assert set(timeouts["annotations"]) == {"summary", "description", "runbook_url"}
                assert timeouts["annotations"]["summary"] == (
                    "Checkouts from a SQLAlchemy pool are timing out."
                )
                assert timeouts["annotations"]["runbook_url"] == (
                    f"{RUNBOOK}#sqlalchemypoolcheckouttimeouts"
                )
                match = re.fullmatch(
                    r"SQLAlchemy pool shop-db of app shop: (\d+\.\d\d) checkouts per second have"
                    r" been failing with \"QueuePool limit \.\.\. reached, connection timed"
                    r" out\" for 1m \(rate over 1m\)\. The app is returning these errors\.",
                    timeouts["annotations"]["description"],
                )
                assert match, timeouts["annotations"]["description"]
                # three threads, each timing out after 0.5 s: about 6 per second
                assert 1.0 <= float(match.group(1)) <= 7.0

                fork = webhook.find(FORK, "firing")
                assert fork is not None
                assert fork["labels"] == expected_labels(FORK, "warning")
                assert fork["annotations"]["summary"] == (
                    "Forked processes inherited open pooled connections from their parent."
                )
                assert fork["annotations"]["runbook_url"] == (
                    f"{RUNBOOK}#sqlalchemypoolforkinheritedconnections"
                )
                match = re.fullmatch(
                    r"SQLAlchemy pool shop-db of app shop: (\d+(?:\.\d+)?) pooled connection\(s\)"
                    r" were inherited open across fork within 15m\. Parent and child share"
                    r" those sockets; call engine\.dispose\(close=False\) in each child after"
                    r" fork\.",
                    fork["annotations"]["description"],
                )
                assert match, fork["annotations"]["description"]
                # one inherited connection; increase() extrapolates a little at the edges
                assert 1.0 <= float(match.group(1)) < 2.0

                # The leak stops: connections come back, the extra threads stop.
                (tmp_path / "control.release").touch()
                released = time.monotonic()
                prom.wait_for(
                    lambda: all(webhook.find(n, "resolved") for n in EXPECTED) or None,
                    RESOLVE_TIMEOUT,
                    "resolved notifications of " + ", ".join(EXPECTED),
                )
                for name, severity in (
                    ("SQLAlchemyPoolCheckoutTimeouts", "critical"),
                    ("SQLAlchemyPoolExhausted", "critical"),
                ):
                    resolved = webhook.find(name, "resolved")
                    assert resolved is not None
                    assert resolved["labels"] == expected_labels(name, severity)
                    assert resolved["endsAt"] >= resolved["startsAt"]
                # Nothing else fired on this workload (no noise from the other rules), and
                # the rules evaluated without errors on real series.
                names = {a["labels"]["alertname"] for a in webhook.alerts()}
                assert names == {*EXPECTED, FORK}
                unhealthy = [
                    (r["name"], r.get("lastError"))
                    for g in prom.rule_groups()
                    for r in g["rules"]
                    if r["health"] != "ok"
                ]
                assert unhealthy == []
                print(
                    f"fired after {fired_after:.0f}s, resolved "
                    f"{time.monotonic() - released:.0f}s after the leak stopped"
                )
            finally:
                (tmp_path / "control.exit").touch()
                for app in apps:
                    try:
                        app.wait(10)
                    except subprocess.TimeoutExpired:
                        app.kill()
                        app.wait(5)


if __name__ == "__main__":
    workload_main(*sys.argv[1:4])
