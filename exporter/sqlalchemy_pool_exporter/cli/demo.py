"""``sqlalchemy-pool-exporter demo``: watch a multi-process app's pool run dry, live.

The real shape of a production deployment, on one machine and a throwaway SQLite file:
a sidecar (``/metrics``, and ``/api/pools`` on its loopback push listener) and several
worker processes, each with its own instrumented engine pushing snapshots to it, like
gunicorn workers next to the sidecar in a pod. Most requests are healthy (``with
Session(engine) as s: ...``); some hit the classic bug of a session that is opened and
never closed, so its connection stays checked out until a janitor — standing in for
request teardown or the garbage collector — lets go of it 10 s later. Leaks pile up,
pools exhaust, healthy requests wait and time out; halfway through one worker is killed
with SIGKILL and replaced, and the sidecar's counters carry on without going backwards.
It stops after ``--duration`` seconds or on Ctrl-C (SIGINT, also sent to the whole
process group by a terminal) or SIGTERM, cleanly: workers are started with SIGINT
blocked and stopped by the demo with SIGTERM, so no worker dies of a KeyboardInterrupt.
Each worker logs the first leak of each checkout site in full; the rest are counted in
the demo's status lines.
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import multiprocessing
import os
import random
import signal
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, exc, text
from sqlalchemy.orm import Session

LEAK_HOLD_SECONDS = 10.0
APP = "shop"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of ``demo``."""
    parser.add_argument("--duration", type=float, default=60.0, help="seconds to run (0 = forever)")
    parser.add_argument("--port", type=int, default=9187, help="sidecar metrics port (0 = any)")
    parser.add_argument("--host", default="127.0.0.1", help="sidecar metrics address")
    parser.add_argument("--workers", type=int, default=3, help="worker processes")
    parser.add_argument("--threads", type=int, default=4, help="request threads per worker")
    parser.add_argument(
        "--leak-rate",
        type=float,
        default=0.004,
        help="fraction of requests that forget to close their session",
    )
    parser.add_argument(
        "--leak-threshold",
        type=float,
        default=5.0,
        help="seconds a checkout may last before it is reported as a leak",
    )


def healthy_request(engine: Any) -> None:
    """A request that closes its session: the connection goes back at once."""
    with Session(engine) as session:
        session.execute(text("SELECT count(*) FROM orders")).scalar()
        time.sleep(random.uniform(0.005, 0.03))


def leaky_request(engine: Any, leaked: list[tuple[float, Session]]) -> None:
    """A request that forgets ``session.close()``: its connection stays checked out."""
    session = Session(engine)
    session.execute(text("SELECT count(*) FROM orders")).scalar()
    leaked.append((time.monotonic(), session))  # the app "keeps" it somewhere


class LeakSummary(logging.Filter):
    """Passes the first leak report per checkout site; drops repeats and returned leaks."""

    def __init__(self) -> None:
        super().__init__()
        self.sites: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        """False for a record the demo's status lines already count."""
        fields = getattr(record, "pool_exporter", None)
        event = fields.get("event") if isinstance(fields, dict) else None
        if event == "leaked connection returned":
            return False
        if event == "connection leak suspected":
            site = str(fields.get("site")) if isinstance(fields, dict) else ""
            if site in self.sites:
                return False
            self.sites.add(site)
            record.msg = f"{record.msg} (first at this site; later ones only count in leaks=)"
        return True


def worker_main(url: str, push_url: str, options: dict[str, Any]) -> None:
    """One worker process: an instrumented engine, request threads, pushes to the sidecar."""
    import sqlalchemy_pool_exporter

    # SIGTERM stops the worker cleanly. (A shared multiprocessing.Event would not do:
    # a worker killed with SIGKILL while waiting on it leaves its lock held for good.)
    # Ctrl-C is the demo's to handle; it then stops the workers with SIGTERM.
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    parent = os.getppid()

    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s worker-%(process)d %(levelname)s %(message)s"
    )
    for handler in logging.getLogger().handlers:
        handler.addFilter(LeakSummary())
    engine = create_engine(url, pool_size=3, max_overflow=2, pool_timeout=2.0)
    sqlalchemy_pool_exporter.instrument(
        engine,
        name="shop-db",
        app=APP,
        push_url=push_url,
        push_interval=1.0,
        leak_threshold=options["leak_threshold"],
        registry=None,
    )
    leaked: list[tuple[float, Session]] = []
    lock = threading.Lock()

    def serve_requests() -> None:
        while not stop.is_set():
            try:
                if random.random() < options["leak_rate"]:
                    with lock:
                        leaky_request(engine, leaked)
                else:
                    healthy_request(engine)
            except exc.TimeoutError:
                pass  # the app's error page; the sidecar counts it
            time.sleep(random.uniform(0.01, 0.05))

    threads = [
        threading.Thread(target=serve_requests, daemon=True) for _ in range(options["threads"])
    ]
    for t in threads:
        t.start()
    while not stop.wait(2.0):
        if os.getppid() != parent:
            break  # the demo itself is gone
        with lock:  # the janitor: drop sessions leaked long enough ago
            now = time.monotonic()
            leaked[:] = [(t0, s) for t0, s in leaked if now - t0 < LEAK_HOLD_SECONDS]
        gc.collect()
    for t in threads:
        t.join(timeout=5)
    leaked.clear()
    engine.dispose()  # the final push at exit retires this process in the sidecar


def _summary(api_url: str) -> str:
    doc = json.loads(urllib.request.urlopen(api_url, timeout=5).read())
    for pool in doc["pools"]:
        if pool["app"] == APP:
            g, c = pool["gauges"], pool["counters"]
            return (
                f"processes={pool['processes']} checked_out={g['checked_out']}"
                f"/{g.get('max_connections') or '-'} pending={g['pending']} "
                f"checkouts={c['checkouts']} timeouts={c['checkout_timeouts']} "
                f"leaked_now={g['leaked_connections']} leaks={c['leaks']} "
                f"gc_reclaimed={c['gc_reclaimed']}"
            )
    return "waiting for the first push"


def run(args: argparse.Namespace) -> int:
    """Run the sidecar and the workers until the duration passes, Ctrl-C or SIGTERM."""
    if args.workers < 1 or args.threads < 1 or not 0 <= args.leak_rate <= 1 or args.duration < 0:
        raise SystemExit(
            "demo: --workers and --threads must be >= 1, --leak-rate in 0..1, --duration >= 0"
        )
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(message)s")
    # Ctrl-C or SIGTERM ends the run like the deadline does: workers stopped, final line.
    stop = threading.Event()
    previous = {s: signal.signal(s, lambda *_: stop.set()) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        return _run(args, stop)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _run(args: argparse.Namespace, stop: threading.Event) -> int:
    from sqlalchemy_pool_exporter.sidecar.server import Sidecar
    from sqlalchemy_pool_exporter.sidecar.settings import SidecarSettings

    tmp = tempfile.TemporaryDirectory(prefix="pool-exporter-demo-")
    url = f"sqlite:///{Path(tmp.name) / 'shop.db'}"
    setup = create_engine(url)
    with setup.begin() as conn:
        conn.execute(text("CREATE TABLE orders (id INTEGER PRIMARY KEY)"))
        conn.execute(text("INSERT INTO orders DEFAULT VALUES"))
    setup.dispose()

    try:
        sidecar = Sidecar(
            SidecarSettings(listen=f"{args.host}:{args.port}", push_listen="127.0.0.1:0")
        ).start()
    except OSError as exc:
        tmp.cleanup()
        print(
            f"demo: cannot listen on {args.host}:{args.port} ({exc.strerror or exc}); "
            "pick another with --port (0 = any free port)",
            file=sys.stderr,
        )
        return 1
    base, api = sidecar.metrics_url, str(sidecar.api_url)
    print(
        f"demo: sidecar metrics at {base}/metrics , pools and checkout sites at "
        f"{api}\ndemo: try: curl -s {base}/metrics | grep sqlalchemy_pool_"
        f"   or: sqlalchemy-pool-exporter status --url {api.removesuffix('/api/pools')}",
        flush=True,
    )

    ctx = multiprocessing.get_context("spawn")
    options = {
        "leak_rate": args.leak_rate,
        "leak_threshold": args.leak_threshold,
        "threads": args.threads,
    }

    def spawn() -> Any:
        proc = ctx.Process(target=worker_main, args=(url, sidecar.push_url, options), daemon=True)
        # A worker starts with SIGINT blocked (the mask survives fork and exec), so a
        # Ctrl-C that reaches it while it is still importing raises nothing there.
        blocked = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
        try:
            proc.start()
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
        return proc

    workers = [spawn() for _ in range(args.workers)]
    start = time.monotonic()
    deadline = start + args.duration if args.duration else float("inf")
    killed = False
    try:
        while time.monotonic() < deadline and not stop.is_set():
            stop.wait(min(2.0, max(0.0, deadline - time.monotonic())))
            if stop.is_set():
                break
            if not killed and time.monotonic() - start >= min(args.duration or 30, 60) / 2:
                victim = workers.pop(0)
                os.kill(victim.pid, signal.SIGKILL)
                victim.join()
                workers.append(spawn())
                killed = True
                print(
                    f"demo: killed worker pid {victim.pid} with SIGKILL and started a "
                    "replacement; its gauges expire, its counters stay in the totals",
                    flush=True,
                )
            print(f"demo: {_summary(api)}", flush=True)
    finally:
        for proc in workers:
            proc.terminate()
        for proc in workers:
            proc.join(timeout=10)
            if proc.is_alive():
                proc.kill()
        print(f"demo: final {_summary(api)}", flush=True)
        sidecar.stop()
        tmp.cleanup()
    print("demo: done", flush=True)
    return 0
